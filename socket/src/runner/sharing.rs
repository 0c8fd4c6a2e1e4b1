//! The adapter between the tab coordinator ([`Tabs`]) and the leader's
//! [`Driver`]: every rule of one connection for all tabs that is not the
//! coordinator's own.
//!
//! * **The leader's driver** is rebuilt at each [`SocketCall::Open`] from
//!   the shared state: the same session, from the last server seq that the
//!   tabs delivered, with every tab's unconfirmed messages under the seqs
//!   they had. It has no queue bound of its own: what it holds was bounded
//!   in the tab that sent it (each tab's capacity and byte limit) and by the
//!   coordinator (which refuses past its own bound, and binary frames in
//!   reliable mode, before they reach the driver). The coordinator counts on
//!   every accepted message reaching it.
//! * **What the coordinator hears of it** is read off the driver after each
//!   input it handles, before the next: a delivered message's server seq is
//!   the reliable window's `last_in` when it grew during that input, acks
//!   are its `acked_total` growing (counted from the seq it was restored
//!   at, and again from zero after a failed resume), the session is its
//!   credentials changing, and in plain mode each application frame
//!   written is one [`SocketReport::Written`]. A server seq that grew
//!   without a message delivered (a channel answer, which the server
//!   numbers) is [`SocketReport::Seen`], once that input's effects are
//!   read: the shared `last_in` follows it, so that a new leader resumes
//!   after it (the server keeps no message acked: resuming from before it
//!   would read as a hole).
//! * **Channels**: the leader's driver holds the one server subscription
//!   per channel ([`SocketCall::Subscribe`], and each channel of the
//!   replica at [`SocketCall::Open`], from its position) and writes its
//!   channel frames unnumbered ([`Driver::unnumbered_channels`]: the
//!   session numbers the tabs' messages alone). Its channel events go to
//!   the coordinator ([`SocketReport::Channel`], with the position after
//!   them), never straight to the app; its publish answers are read after
//!   each input ([`SocketReport::Published`]). This tab's own subscriptions
//!   are numbered here (their serials), and its publishes' answers wait
//!   here for the coordinator's [`TabEvent::Published`]; a tab that goes
//!   alone publishes what is unanswered on its own driver, with the same ids.
//! * **Presence**: a tab's query goes through the coordinator to the
//!   leader, whose driver asks it ([`SocketCall::Query`], answered to a
//!   closure that keeps the asking tab and its id); the answers are read
//!   after each input ([`SocketReport::Presence`]), as publish answers are.
//!   This tab's own queries' answer closures wait here for the
//!   coordinator's [`TabEvent::Presence`]; a tab that goes alone asks what
//!   is unanswered on its own driver.
//! * **What the app sees**: the driver's events while this tab leads (its
//!   inbound messages go through the coordinator, which delivers each to
//!   every tab once), the coordinator's deliveries otherwise; a refusal is
//!   an [`Event::Dropped`], never silence.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::{Runner, Step, TabIo};
use crate::channel::{
    ChannelNotice, PresenceError, PublishError, RawJson, StreamPosition, SubscribeError,
};
use crate::config::{Config, Overflow};
use crate::driver::{Driver, PublishAnswer, Query};
use crate::message::{
    DropReason, Event, Message, NotShared, SendError, SendOutcome, State, Stats, TabRole,
};
use crate::reliable::Reliable;
use crate::tabs::{
    Effect, Envelope, Frame, Input, LinkState, PresenceAnswer, Role, Session, SocketCall,
    SocketReport, TabEvent, TabId, TabSend, Tabs,
};

/// The coordinator and the adapter's bookkeeping.
pub(super) struct Sharing {
    pub(super) coordinator: Tabs,
    /// The coordinator's inputs not yet fed, with their arrival time.
    pub(super) inputs: VecDeque<(Input, f64)>,
    adapter: Adapter,
    /// The coordinator sent this tab alone: the driver runs as without sharing.
    alone: bool,
    /// What [`Runner::close`] handed back, for `take_queued`.
    pub(super) unsent: Vec<Message>,
    /// The application closed this tab: it leaves once the work queued
    /// before the close is done (so that no confirmation of a message it
    /// sent before is lost to the close).
    leaving: Option<(u16, String)>,
    /// This tab left: once its last words are out, the channel goes.
    left: bool,
    /// The last subscription serial given (this tab's, for its handles).
    serial: u64,
    /// The last publish number given.
    ticket: u64,
    /// This tab's publishes awaiting their answer: id, channel, data (to
    /// publish again on its own socket if it goes alone), where it goes.
    answers: Vec<(String, String, RawJson, PublishAnswer)>,
    /// This tab's presence queries awaiting their answer: id, channel
    /// (to ask again on its own socket if it goes alone), where it goes.
    queries: Vec<(String, String, Query)>,
}

/// The publish answers of the leader's driver: id and outcome.
type Answers = Arc<Mutex<Vec<(String, Result<u64, PublishError>)>>>;

/// The presence answers of the leader's driver: the asking tab, its id of
/// the query, the channel, and the outcome.
type Asked = Arc<Mutex<Vec<(TabId, String, String, Result<PresenceAnswer, PresenceError>)>>>;

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
    /// Reliable: the window's `last_in` grew during the input just handled
    /// (reported as [`SocketReport::Seen`] once its effects are read, unless
    /// a delivered message reported it).
    seen: Option<u64>,
    /// The last server seq reported (delivered or seen).
    reported_in: u64,
    /// The driver's subscription serial per channel.
    serials: Vec<(String, u64)>,
    /// The driver's publish answers, read after each input it handles.
    published: Answers,
    /// The driver's presence answers, likewise.
    asked: Asked,
}

impl Sharing {
    pub(super) fn new(tab_id: u32, config: &Config) -> Self {
        Self {
            coordinator: Tabs::new(TabId(tab_id), config),
            inputs: VecDeque::new(),
            adapter: Adapter::default(),
            alone: false,
            unsent: Vec::new(),
            leaving: None,
            left: false,
            // Far from the driver's own serials (from 1): a handle of the
            // shared era dropped after the tab went alone names no
            // subscription of its own driver.
            serial: 1 << 40,
            ticket: 0,
            answers: Vec::new(),
            queries: Vec::new(),
        }
    }

    /// A presence query through the leader; its answer goes to `query`.
    pub(super) fn query(&mut self, channel: &str, query: Query) -> Result<(), PresenceError> {
        if self.leaving.is_some() {
            return Err(PresenceError::Closed);
        }
        let stats = matches!(query, Query::Stats(_));
        let id = self.coordinator.presence(channel, stats)?;
        self.queries.push((id, channel.to_owned(), query));
        Ok(())
    }

    pub(super) fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<u64, SubscribeError> {
        let serial = self.serial.saturating_add(1);
        self.coordinator.subscribe(channel, serial, since)?;
        self.serial = serial;
        Ok(serial)
    }

    pub(super) fn publish(
        &mut self,
        channel: &str,
        data: RawJson,
        id: u128,
        answer: PublishAnswer,
    ) -> Result<u64, PublishError> {
        if self.leaving.is_some() {
            return Err(PublishError::Closed);
        }
        let id = format!("{id:032x}");
        self.coordinator
            .publish(channel, id.clone(), data.clone())?;
        self.answers.push((id, channel.to_owned(), data, answer));
        self.ticket = self.ticket.saturating_add(1);
        Ok(self.ticket)
    }

    pub(super) fn send(&mut self, message: Message) -> Result<SendOutcome, SendError> {
        if self.leaving.is_some() {
            return Err(SendError::Closed(message));
        }
        self.coordinator.send(message).map(|sent| match sent {
            TabSend::Sent => SendOutcome::Sent,
            TabSend::Forwarded => SendOutcome::Forwarded,
            TabSend::Queued => SendOutcome::Queued,
        })
    }
}

pub(super) fn link_of(state: State) -> LinkState {
    match state {
        State::Open => LinkState::Open,
        State::Closed => LinkState::Closed,
        _ => LinkState::Connecting,
    }
}

pub(super) fn state_of(link: LinkState) -> State {
    match link {
        LinkState::Open => State::Open,
        LinkState::Closed => State::Closed,
        LinkState::Connecting => State::Connecting { attempt: 0 },
    }
}

pub(super) fn role_of(role: Role) -> TabRole {
    match role {
        Role::Leader => TabRole::Leader,
        Role::Follower => TabRole::Follower,
        Role::Alone => TabRole::Alone,
    }
}

impl Runner {
    /// The coordinator, while it runs this tab (sharing on, not alone).
    pub(super) fn sharing(&self) -> Option<&Sharing> {
        self.sharing.as_ref().filter(|s| !s.alone)
    }

    pub(super) fn sharing_mut(&mut self) -> Option<&mut Sharing> {
        self.sharing.as_mut().filter(|s| !s.alone)
    }

    /// Whether this tab's driver is the shared connection's.
    pub(super) fn leading(&self) -> bool {
        self.sharing().is_some_and(|s| s.adapter.driving)
    }

    /// Whether this tab shares and does not lead: its driver is idle (not
    /// started), and takes no input.
    pub(super) fn idle_driver(&self) -> bool {
        self.sharing().is_some_and(|s| !s.adapter.driving)
    }

    /// This tab leaves the shared connection (its close, or the page going
    /// away): once the work queued before is done, the leader hands it over
    /// or, last, closes it with `code`. Nothing without sharing.
    pub(crate) fn leave(&mut self, code: u16, reason: &str) {
        if let Some(sharing) = self.sharing_mut() {
            sharing
                .leaving
                .get_or_insert_with(|| (code, reason.to_owned()));
        }
    }

    /// When all the work queued before the application's close is done:
    /// the coordinator's close (its `Bye`, the socket handed over or
    /// closed); whether there was one.
    pub(super) fn leave_now(&mut self) -> bool {
        let Some(sharing) = self.sharing_mut() else {
            return false;
        };
        let Some(close) = sharing.leaving.take() else {
            return false;
        };
        sharing.adapter.close = Some(close);
        let unsent = sharing.coordinator.close();
        sharing.unsent.extend(unsent.into_iter().map(Message::from));
        sharing.left = true;
        true
    }

    /// The socket goes without a close (the last handle was dropped): this
    /// tab's last words, so that the others do not wait for silence.
    pub(crate) fn farewell(&mut self) -> Vec<Envelope> {
        let Some(sharing) = self.sharing_mut() else {
            return Vec::new();
        };
        drop(sharing.coordinator.close());
        let mut posts = Vec::new();
        while let Some(effect) = sharing.coordinator.poll_effect() {
            if let Effect::Broadcast(envelope) = effect {
                posts.push(envelope);
            }
        }
        posts
    }

    /// After a [`Runner::leave`], once everything is done: detach.
    pub(super) fn detach_if_left(&mut self) -> Option<Step> {
        let sharing = self.sharing_mut().filter(|s| s.left)?;
        sharing.left = false;
        Some(Step::Tabs(TabIo::Detach))
    }

    /// The shared connection's state, unless this tab's driver is it.
    pub(super) fn shared_state(&self) -> Option<State> {
        let sharing = self.sharing()?;
        (!sharing.adapter.driving).then(|| state_of(sharing.coordinator.link()))
    }

    /// Stats with the tab's role and count, and its own queue.
    pub(super) fn tab_stats(&self, stats: &mut Stats) {
        let Some(sharing) = self.sharing() else {
            return;
        };
        let coordinator = &sharing.coordinator;
        stats.tab_role = role_of(coordinator.role());
        stats.tabs = coordinator.tabs();
        stats.queue_len = coordinator.outbox_len();
        stats.queue_capacity = self.config.queue_capacity;
    }

    /// Before the driver handles an input: where the window was.
    pub(super) fn before_driver_input(&mut self) {
        if !self.leading() {
            return;
        }
        let last_in = self.driver.reliable().map_or(0, Reliable::last_in);
        if let Some(sharing) = &mut self.sharing {
            sharing.adapter.last_in_before = last_in;
        }
    }

    /// After the driver handled an input: report a new session and new acks.
    pub(super) fn after_driver_input(&mut self, now: f64) {
        if !self.leading() {
            return;
        }
        let (Some(reliable), Some(sharing)) = (self.driver.reliable(), &mut self.sharing) else {
            if let Some(sharing) = &mut self.sharing {
                report_published(&sharing.adapter, &mut sharing.inputs, now);
            }
            return;
        };
        let adapter = &mut sharing.adapter;
        let credentials = reliable
            .credentials()
            .map(|(id, token)| (id.to_owned(), token.to_owned()));
        if credentials.is_some() && credentials != adapter.credentials {
            adapter.credentials.clone_from(&credentials);
            if let Some((id, token)) = credentials {
                let report = SocketReport::Session(Session { id, token });
                sharing.inputs.push_back((Input::Socket(report), now));
            }
        }
        report_published(adapter, &mut sharing.inputs, now);
        if reliable.last_in() > adapter.last_in_before {
            adapter.seen = Some(reliable.last_in());
        }
        let acked = adapter.acked_base + reliable.acked_total() - adapter.acked_from;
        if acked > adapter.acked_reported {
            adapter.acked_reported = acked;
            let report = SocketReport::Acked { seq: acked };
            sharing.inputs.push_back((Input::Socket(report), now));
        }
    }

    /// Once the leading driver's effects of an input are read: the server
    /// seq it handled without delivering a message (a channel answer), as
    /// [`SocketReport::Seen`].
    pub(super) fn report_seen(&mut self, now: f64) {
        let Some(sharing) = self.sharing.as_mut().filter(|s| !s.alone) else {
            return;
        };
        let adapter = &mut sharing.adapter;
        if let Some(seq) = adapter.seen.take()
            && adapter.driving
            && seq > adapter.reported_in
        {
            adapter.reported_in = seq;
            let report = Input::Socket(SocketReport::Seen { seq });
            sharing.inputs.push_back((report, now));
        }
    }

    /// Plain mode: an application frame reached the leader's socket.
    pub(super) fn tab_written(&mut self, now: f64) {
        if self.leading()
            && let Some(sharing) = &mut self.sharing
        {
            let report = Input::Socket(SocketReport::Written);
            sharing.inputs.push_back((report, now));
        }
    }

    /// A driver event while sharing: reported to the coordinator, or
    /// passed to the app. `None` when taken.
    pub(super) fn tab_event(&mut self, event: Event, now: f64) -> Option<Event> {
        let last_in = self.driver.reliable().map(Reliable::last_in);
        let acked_total = self.driver.reliable().map_or(0, Reliable::acked_total);
        let Some(sharing) = self.sharing.as_mut().filter(|s| !s.alone) else {
            // Not sharing, or alone: the app's own socket.
            return Some(event);
        };
        if !sharing.adapter.driving {
            // The leader's driver closing after its release: not ours to show.
            return None;
        }
        let mut report = |report: SocketReport| {
            sharing.inputs.push_back((Input::Socket(report), now));
        };
        match event {
            Event::Message(message) => {
                let before = sharing.adapter.last_in_before;
                let seq = last_in.filter(|seq| *seq > before);
                if let Some(seq) = seq {
                    sharing.adapter.reported_in = sharing.adapter.reported_in.max(seq);
                }
                report(SocketReport::Inbound {
                    seq,
                    frame: Frame::from(message),
                });
                None
            }
            Event::StateChanged(state) => {
                let link = link_of(state);
                if sharing.adapter.link != Some(link) {
                    sharing.adapter.link = Some(link);
                    report(SocketReport::State(link));
                }
                Some(event)
            }
            Event::Channel(notice) => {
                let channel = notice.channel().to_owned();
                let serial = sharing
                    .adapter
                    .serials
                    .iter()
                    .find(|(c, _)| *c == channel)
                    .map(|(_, s)| *s);
                let position = serial.and_then(|s| self.driver.channel_position(&channel, s));
                report(SocketReport::Channel {
                    channel,
                    position,
                    event: notice.event().clone(),
                });
                None
            }
            Event::ResumeFailed { unconfirmed, .. } => {
                let adapter = &mut sharing.adapter;
                adapter.acked_base = 0;
                adapter.acked_reported = 0;
                adapter.acked_from = acked_total;
                adapter.reported_in = 0;
                adapter.seen = None;
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

    /// Feeds the next coordinator input; whether there was one.
    pub(super) fn feed_tabs(&mut self) -> bool {
        let Some(sharing) = &mut self.sharing else {
            return false;
        };
        match sharing.inputs.pop_front() {
            Some((input, now)) => {
                sharing.coordinator.handle(input, now);
                true
            }
            None => false,
        }
    }

    /// Performs the next coordinator effect; whether there was one.
    pub(super) fn perform_tabs(&mut self, now: f64) -> bool {
        let Some(sharing) = &mut self.sharing else {
            return false;
        };
        let Some(effect) = sharing.coordinator.poll_effect() else {
            return false;
        };
        let io = |io: TabIo| Step::Tabs(io);
        match effect {
            Effect::Broadcast(envelope) => self.out.push_back(io(TabIo::Post(Box::new(envelope)))),
            Effect::TryLock => self.out.push_back(io(TabIo::TryLock)),
            Effect::RequestLock => self.out.push_back(io(TabIo::RequestLock)),
            Effect::StealLock => self.out.push_back(io(TabIo::StealLock)),
            Effect::ReleaseLock => self.out.push_back(io(TabIo::ReleaseLock)),
            Effect::DriveSocket(call) => self.drive(call, now),
            Effect::Deliver(event) => self.deliver(event),
            Effect::GoAlone { unsent } => self.go_alone(unsent, now),
        }
        true
    }

    /// The coordinator sent this tab alone: its driver runs as without
    /// sharing, with what no leader accepted.
    fn go_alone(&mut self, unsent: Vec<Frame>, now: f64) {
        let Some(sharing) = &mut self.sharing else {
            return;
        };
        sharing.alone = true;
        let answers = std::mem::take(&mut sharing.answers);
        let queries = std::mem::take(&mut sharing.queries);
        self.out.push_back(Step::Tabs(TabIo::Detach));
        // A leader keeps the socket it drives (with the other tabs'
        // messages it accepted) as its own.
        if !std::mem::take(&mut sharing.adapter.driving) {
            self.driver.set_open_hook(self.hook);
            self.driver.start(now);
        }
        let refused: Vec<Message> = unsent
            .into_iter()
            .filter_map(|frame| self.driver.send(frame).err()?.into_message())
            .collect();
        // Unanswered publishes go out on its own socket, with the same ids
        // (published once if a leader published them already).
        for (id, channel, data, answer) in answers {
            let id = id_of(&id);
            // An error reaches `answer` only on success paths; a refusal
            // here drops it, which the `Publish` reads as `Dropped`.
            let _ = self.driver.publish(&channel, data, id, answer);
        }
        // Unanswered queries are asked on its own socket (a refusal drops
        // the answer, which the query reads as `Dropped`).
        for (_, channel, query) in queries {
            let _ = self.driver.query(&channel, query);
        }
        // Never silent: what its own socket refused is handed back.
        self.out.extend(
            refused
                .into_iter()
                .map(|message| Step::Emit(dropped(message))),
        );
    }

    /// The leader's socket calls.
    fn drive(&mut self, call: SocketCall, now: f64) {
        let seed = self.seed();
        let Some(sharing) = &mut self.sharing else {
            return;
        };
        match call {
            SocketCall::Open { resume } => {
                let config = Config {
                    queue_capacity: usize::MAX,
                    queue_max_bytes: None,
                    overflow: Overflow::RejectNew,
                    ..self.config.clone()
                };
                let mut driver = Driver::new(config, seed);
                // Its session numbers the tabs' messages alone.
                driver.unnumbered_channels();
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
                let close = sharing.adapter.close.take();
                sharing.adapter = Adapter {
                    driving: true,
                    acked_base: resume.acked_seq,
                    acked_reported: resume.acked_seq,
                    reported_in: resume.last_in,
                    credentials: resume
                        .session
                        .as_ref()
                        .map(|s| (s.id.clone(), s.token.clone())),
                    close,
                    ..Adapter::default()
                };
                driver.start(now);
                if !restored {
                    for pending in &resume.pending {
                        // Unbounded and not closed: queued for the open.
                        let _ = driver.send(pending.frame.clone());
                    }
                }
                // One server subscription per shared channel, from the
                // position every tab delivered.
                for shared in &resume.channels {
                    if let Ok(serial) = driver.subscribe(&shared.channel, shared.position.clone()) {
                        sharing
                            .adapter
                            .serials
                            .push((shared.channel.clone(), serial));
                    }
                }
                self.driver = driver;
            }
            SocketCall::Subscribe { channel, since } => {
                if let Ok(serial) = self.driver.subscribe(&channel, since) {
                    let serials = &mut sharing.adapter.serials;
                    serials.retain(|(c, _)| *c != channel);
                    serials.push((channel, serial));
                }
            }
            SocketCall::Unsubscribe { channel } => {
                let serials = &mut sharing.adapter.serials;
                if let Some(at) = serials.iter().position(|(c, _)| *c == channel) {
                    let (channel, serial) = serials.remove(at);
                    self.driver.unsubscribe(&channel, serial);
                }
            }
            SocketCall::Publish { channel, id, data } => {
                let published = Arc::clone(&sharing.adapter.published);
                let key = id.clone();
                let answer: PublishAnswer = Box::new(move |result| {
                    if let Ok(mut published) = published.lock() {
                        published.push((key, result));
                    }
                });
                let id = id_of(&id);
                // Refused before the server (never, unbounded and open):
                // the publisher resends it to the next leader.
                let _ = self.driver.publish(&channel, data, id, answer);
            }
            SocketCall::Query {
                tab,
                id,
                channel,
                stats,
            } => {
                let asked = Arc::clone(&sharing.adapter.asked);
                let key = (tab, id, channel.clone());
                let answer = move |result| {
                    if let Ok(mut asked) = asked.lock() {
                        let (tab, id, channel) = key;
                        asked.push((tab, id, channel, result));
                    }
                };
                let query = if stats {
                    Query::Stats(Box::new(move |result| {
                        answer(result.map(PresenceAnswer::Stats));
                    }))
                } else {
                    Query::Members(Box::new(move |result| {
                        answer(result.map(PresenceAnswer::Members));
                    }))
                };
                // Refused before the server (never, unbounded and open):
                // the tab asks the next leader again.
                let _ = self.driver.query(&channel, query);
            }
            SocketCall::Send(frame) => {
                if let Err(error) = self.driver.send(frame)
                    && let Some(message) = error.into_message()
                {
                    self.out.push_back(Step::Emit(dropped(message)));
                }
            }
            SocketCall::Release => {
                sharing.adapter.driving = false;
                // The socket goes without ending the session; the timers too.
                self.driver = Driver::new(self.config.clone(), seed);
                self.out.push_back(Step::ForgetSocket);
            }
            SocketCall::Close => {
                // Still this tab's driver: its close shows as its state.
                let (code, reason) = sharing
                    .adapter
                    .close
                    .clone()
                    .unwrap_or((shared::close_code::NORMAL, String::new()));
                // The code was checked by `Runner::close`.
                let _ = self.driver.close(code, &reason, now);
            }
        }
    }

    /// The coordinator's deliveries as the app's events.
    fn deliver(&mut self, event: TabEvent) {
        let event = match event {
            TabEvent::Message(frame) => Event::Message(frame.into()),
            TabEvent::Role { role, tabs } => Event::TabRole {
                role: role_of(role),
                tabs,
            },
            // The leader's app sees its driver's own, more precise, states.
            TabEvent::State(_) if self.leading() => return,
            // A follower hears the shared connection open as the leader's
            // app does: `Open` after the state (an app that waits for it
            // to enable its sends works unchanged in any tab).
            TabEvent::State(LinkState::Open) => {
                self.out
                    .push_back(Step::Emit(Event::StateChanged(State::Open)));
                Event::Open
            }
            TabEvent::State(link) => Event::StateChanged(state_of(link)),
            TabEvent::Unconfirmed(frames) => Event::ResumeFailed {
                reason: shared::ResumeFailure::UnknownSession,
                unconfirmed: frames.into_iter().map(Message::from).collect(),
            },
            TabEvent::ConfigMismatch { leader } => Event::NotShared(NotShared::ConfigMismatch {
                leader_url: leader.url,
            }),
            TabEvent::Unsupported => Event::NotShared(NotShared::Unsupported),
            TabEvent::OtherWire { version } => Event::NotShared(NotShared::OtherWire { version }),
            TabEvent::Refused { frame, .. } => Event::Dropped {
                message: frame.into(),
                reason: DropReason::RefusedByLeader,
            },
            TabEvent::Channel {
                channel,
                serial,
                event,
            } => Event::Channel(ChannelNotice::new(channel, serial, event)),
            TabEvent::Presence { id, result } => {
                if let Some(sharing) = &mut self.sharing {
                    let queries = &mut sharing.queries;
                    if let Some(at) = queries.iter().position(|(i, ..)| *i == id) {
                        let (.., query) = queries.remove(at);
                        answer_query(query, result);
                    }
                }
                return;
            }
            TabEvent::Published { id, result } => {
                if let Some(sharing) = &mut self.sharing {
                    let answers = &mut sharing.answers;
                    if let Some(at) = answers.iter().position(|(i, ..)| *i == id) {
                        let (.., answer) = answers.remove(at);
                        answer(result);
                    }
                }
                return;
            }
        };
        self.out.push_back(Step::Emit(event));
    }
}

/// A publish id's number (32 hex digits, as the table writes it; the
/// leader takes no other). By hand: `u128::from_str_radix` weighed in the
/// console's wasm.
fn id_of(hex: &str) -> u128 {
    hex.chars().fold(0, |id, c| {
        (id << 4) | u128::from(c.to_digit(16).unwrap_or_default())
    })
}

/// The publish and presence answers the leader's driver gave, as reports
/// (a refusal other than the server's is left for the next leader: the
/// tab resends it).
fn report_published(adapter: &Adapter, inputs: &mut VecDeque<(Input, f64)>, now: f64) {
    let answers = match adapter.published.lock() {
        Ok(mut published) => std::mem::take(&mut *published),
        Err(_) => return,
    };
    for (id, result) in answers {
        let result = match result {
            Ok(offset) => Ok(offset),
            Err(PublishError::Refused { code, message }) => Err((code, message)),
            Err(_) => continue,
        };
        let report = SocketReport::Published { id, result };
        inputs.push_back((Input::Socket(report), now));
    }
    let asked = match adapter.asked.lock() {
        Ok(mut asked) => std::mem::take(&mut *asked),
        Err(_) => return,
    };
    for (tab, id, channel, result) in asked {
        let result = match result {
            Ok(answer) => Ok(answer),
            Err(PresenceError::Refused { code, message }) => Err((code, message)),
            // Not the server's word: the tab asks the next leader.
            Err(_) => continue,
        };
        let report = SocketReport::Presence {
            tab,
            id,
            channel,
            result,
        };
        inputs.push_back((Input::Socket(report), now));
    }
}

/// Gives a presence answer to the query that asked it (the coordinator
/// matched the kinds).
fn answer_query(query: Query, result: Result<PresenceAnswer, PresenceError>) {
    match (query, result) {
        (Query::Members(answer), Ok(PresenceAnswer::Members(members))) => answer(Ok(members)),
        (Query::Stats(answer), Ok(PresenceAnswer::Stats(stats))) => answer(Ok(stats)),
        (Query::Members(answer), Err(error)) => answer(Err(error)),
        (Query::Stats(answer), Err(error)) => answer(Err(error)),
        // Not what was asked (the coordinator lets none through).
        _ => {}
    }
}

/// A message the leader's socket refused, handed back.
fn dropped(message: Message) -> Event {
    Event::Dropped {
        message,
        reason: DropReason::Overflow,
    }
}
