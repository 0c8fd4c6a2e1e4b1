//! Tabs that share one connection, each a whole [`Runner`] (coordinator,
//! adapter and the real [`Driver`](crate::Driver)), over a simulated
//! browser (one channel FIFO, one Web Lock, sockets, timers) and a server
//! that speaks the real wire ([`ClientMessage`], [`ServerMessage`]): a
//! welcome on every connection, sessions resumed by id and token, client
//! `msg`s processed once each and acknowledged, server `msg`s numbered and
//! replayed after a resume.
//!
//! Random sends, pushes, channel and socket deliveries, timers, connection
//! cuts (in flight frames lost) and leader closes. So the adapter's rules
//! run against the real driver: the rebuild of a leader's driver from the
//! shared state, acks read off it, delivered seqs inferred from it. The
//! judge: the server processed each tab's messages once, in that tab's
//! order, and lost none that the tab was not handed back; each open tab
//! delivered each server message once, in order, with no hole.
//!
//! Channels too (issue 23): most tabs subscribe to one channel, the
//! server publishes to it (as its admin API would) and tabs publish; the
//! server keeps the channel's whole history (so no gap is ever due),
//! recovers from `since`, deduplicates publishes by id and refuses a
//! second subscription on one connection; it numbers its answers in
//! reliable mode and, as the real server, replays on a resume only what
//! the client did not acknowledge (so a new leader that resumed from
//! before a channel answer its predecessor acked would see a hole: a
//! `Gap` fails the run). The judge: each subscribed tab
//! delivered each offset once, in order, with no gap, up to the last; each
//! open tab's publish was answered once, with the offset the server gave
//! its id.
//!
//! Presence too (issue 24): every subscribed tab follows the channel's
//! presence, an outside client joins and leaves it now and then (the
//! server sends `join` and `leave` to each subscribed connection, never
//! numbered), and tabs ask `presence` and `presence_stats`. The judge:
//! each open, subscribed tab's member set (its `Presence` answers patched
//! by the joins and leaves, as `Presence::apply` does) is the server's, the
//! shared connection listed once; each open tab's query was answered
//! once, with the kind it asked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use shared::channel::{RawJson, UnsubscribeReason};
use shared::{ClientMessage, ResumeFailure, ServerMessage};

use super::super::{Runner, Step, TabIo};
use crate::channel::{ChannelEvent, Member, Presence, PresenceError, PublishError};
use crate::config::Config;
use crate::driver::{Effect, Input, Query, TimerId, TimerKind};
use crate::message::{Event, Message, SendError, TabRole};
use crate::tabs::{HEARTBEAT_MS, Input as TabInput};

/// The channel the tabs share.
const CH: &str = "chat:sim";

/// `splitmix64`, seeded: every run of a seed is the same.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// One session on the server.
struct Session {
    token: String,
    /// The last client seq processed (reliable).
    upto: u64,
    /// The server's messages, seq `i + 1` at `i`.
    history: Vec<String>,
    /// The last seq the client acknowledged: a resume replays only what
    /// follows it (the server keeps no more), whatever `last_seq` says.
    acked: u64,
}

/// One connection on the server.
struct Conn {
    tab: usize,
    generation: u64,
    open: bool,
    /// The session it was welcomed with, and the one it carries.
    offered: String,
    session: Option<String>,
    /// Frames on their way to the client (lost if the connection is cut).
    to_client: VecDeque<String>,
    /// Subscribed to [`CH`].
    subscribed: bool,
}

#[derive(Default)]
struct Server {
    reliable: bool,
    sessions: BTreeMap<String, Session>,
    conns: Vec<Conn>,
    /// Every application message processed, in order.
    processed: Vec<String>,
    pushes: u64,
    /// The newest session: the one the tabs share.
    current: Option<String>,
    /// [`CH`]'s publications' data, offset `i + 1` at `i` (epoch `e1`).
    stream: Vec<String>,
    /// The offset of each publish id.
    publish_ids: HashMap<String, u64>,
    /// `subscribe`s received.
    subscribes: usize,
    /// The outside client is in [`CH`]'s presence.
    outsider: bool,
    /// How many times it joined or left.
    toggles: usize,
}

impl Server {
    /// A connection opens: the welcome offers a new session.
    fn open(&mut self, tab: usize, generation: u64) -> usize {
        let offered = format!("s{}", self.conns.len() + 1);
        let welcome = ServerMessage::Welcome {
            client_id: format!("c{tab}"),
            push_interval_ms: 0,
            session: self.reliable.then(|| offered.clone()),
            token: self.reliable.then(|| format!("k-{offered}")),
            protocol: 2,
            exp: None,
        };
        self.conns.push(Conn {
            tab,
            generation,
            open: true,
            offered,
            session: None,
            to_client: VecDeque::from([welcome.to_json()]),
            subscribed: false,
        });
        self.conns.len() - 1
    }

    fn close(&mut self, conn: usize) {
        let conn = &mut self.conns[conn];
        conn.open = false;
        conn.session = None;
        conn.to_client.clear();
        conn.subscribed = false;
    }

    /// An answer to a channel request: numbered in reliable mode (at the
    /// top level as inside a `msg`), as the server does.
    fn answer(&mut self, conn: usize, message: &ServerMessage) {
        if !self.reliable {
            self.to(conn, message);
            return;
        }
        self.bind_offered(conn);
        let id = self.conns[conn].session.clone().expect("bound");
        let session = self.sessions.get_mut(&id).expect("known");
        let data = message.to_json();
        session.history.push(data.clone());
        let seq = session.history.len() as u64;
        self.to(conn, &ServerMessage::Msg { seq, data });
    }

    /// Appends to [`CH`] and sends the `pub` to each subscribed
    /// connection (never numbered). Returns its offset.
    fn append(&mut self, data: String) -> u64 {
        self.stream.push(data.clone());
        let offset = self.stream.len() as u64;
        let message = ServerMessage::Pub {
            channel: CH.into(),
            offset,
            data: RawJson::parse(&data).expect("json"),
            info: None,
        };
        for c in 0..self.conns.len() {
            if self.conns[c].open && self.conns[c].subscribed {
                self.to(c, &message);
            }
        }
        offset
    }

    /// [`CH`]'s members: each open connection subscribed, and the outsider.
    fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .conns
            .iter()
            .filter(|c| c.open && c.subscribed)
            .map(|c| member(&format!("c{}", c.tab)))
            .collect();
        if self.outsider {
            members.push(member("outsider"));
        }
        members
    }

    /// The outside client joins [`CH`], or leaves it: each subscribed
    /// connection hears it (never numbered).
    fn toggle_outsider(&mut self) {
        self.outsider = !self.outsider;
        self.toggles += 1;
        let info = member("outsider");
        let message = if self.outsider {
            ServerMessage::Join {
                channel: CH.into(),
                info,
            }
        } else {
            ServerMessage::Leave {
                channel: CH.into(),
                info,
            }
        };
        for c in 0..self.conns.len() {
            if self.conns[c].open && self.conns[c].subscribed {
                self.to(c, &message);
            }
        }
    }

    /// The admin API publishes.
    fn admin_publish(&mut self) {
        let n = self.stream.len() + 1;
        self.append(format!("\"admin {n}\""));
    }

    /// A channel request; false if `message` is not one.
    fn channel(&mut self, conn: usize, message: ClientMessage) -> bool {
        match message {
            ClientMessage::Subscribe { channel, since, id } => {
                assert_eq!(channel, CH);
                assert!(
                    !self.conns[conn].subscribed,
                    "two subscriptions to one channel on one connection"
                );
                self.subscribes += 1;
                self.conns[conn].subscribed = true;
                let top = self.stream.len() as u64;
                let from = since.filter(|s| s.epoch == "e1").map(|s| s.offset);
                assert!(from.is_none_or(|f| f <= top), "since past the stream");
                self.answer(
                    conn,
                    &ServerMessage::Subscribed {
                        channel: CH.into(),
                        epoch: "e1".into(),
                        offset: from.unwrap_or(top),
                        recovered: from.map(|_| true),
                        reason: None,
                        gap: None,
                        id,
                    },
                );
                for offset in from.unwrap_or(top) + 1..=top {
                    let data = self.stream[offset as usize - 1].clone();
                    let message = ServerMessage::Pub {
                        channel: CH.into(),
                        offset,
                        data: RawJson::parse(&data).expect("json"),
                        info: None,
                    };
                    self.to(conn, &message);
                }
            }
            ClientMessage::Unsubscribe { channel, id } => {
                self.conns[conn].subscribed = false;
                let message = ServerMessage::Unsubscribed {
                    channel,
                    reason: UnsubscribeReason::Client,
                    id,
                };
                self.answer(conn, &message);
            }
            ClientMessage::Publish { channel, data, id } => {
                let id = id.expect("an id");
                let offset = match self.publish_ids.get(&id) {
                    Some(offset) => *offset,
                    None => {
                        let offset = self.append(data.get().to_owned());
                        self.publish_ids.insert(id.clone(), offset);
                        offset
                    }
                };
                let message = ServerMessage::Published {
                    channel,
                    offset,
                    id: Some(id),
                };
                self.answer(conn, &message);
            }
            // Never numbered, in reliable mode too.
            ClientMessage::Presence { channel, id } => {
                let message = ServerMessage::Presence {
                    channel,
                    clients: self.members(),
                    truncated: None,
                    id,
                };
                self.to(conn, &message);
            }
            ClientMessage::PresenceStats { channel, id } => {
                let message = ServerMessage::PresenceStats {
                    channel,
                    clients: self.members().len() as u64,
                    users: 0,
                    id,
                };
                self.to(conn, &message);
            }
            _ => return false,
        }
        true
    }

    fn to(&mut self, conn: usize, message: &ServerMessage) {
        self.conns[conn].to_client.push_back(message.to_json());
    }

    /// Binds the offered session (the first message was not a resume).
    fn bind_offered(&mut self, conn: usize) {
        if self.conns[conn].session.is_none() {
            let id = self.conns[conn].offered.clone();
            self.sessions.insert(
                id.clone(),
                Session {
                    token: format!("k-{id}"),
                    upto: 0,
                    history: Vec::new(),
                    acked: 0,
                },
            );
            self.conns[conn].session = Some(id.clone());
            self.current = Some(id);
        }
    }

    fn receive(&mut self, conn: usize, text: &str) {
        assert!(self.conns[conn].open, "written on a closed connection");
        if let Ok(message) = ClientMessage::from_json(text)
            && self.channel(conn, message)
        {
            return;
        }
        if !self.reliable {
            self.processed.push(text.to_owned());
            return;
        }
        let message = ClientMessage::from_json(text).expect("the wire");
        match message {
            ClientMessage::Resume {
                session,
                token,
                last_seq,
            } => {
                assert!(self.conns[conn].session.is_none(), "resume not first");
                assert!(
                    !self
                        .conns
                        .iter()
                        .any(|c| c.open && c.session.as_ref() == Some(&session)),
                    "a session on two connections"
                );
                let known = self.sessions.get(&session).filter(|s| s.token == token);
                let Some(known) = known else {
                    self.to(
                        conn,
                        &ServerMessage::ResumeFailed {
                            reason: ResumeFailure::UnknownSession,
                        },
                    );
                    self.bind_offered(conn);
                    return;
                };
                let from = usize::try_from(last_seq.max(known.acked)).expect("small");
                assert!(from <= known.history.len(), "resumed past the history");
                let replay = known.history[from..].to_vec();
                let last_seq = from as u64;
                let upto = known.upto;
                self.conns[conn].session = Some(session);
                self.to(conn, &ServerMessage::Resumed { last_seq: upto });
                for (k, data) in replay.into_iter().enumerate() {
                    let seq = last_seq + 1 + k as u64;
                    self.to(conn, &ServerMessage::Msg { seq, data });
                }
            }
            ClientMessage::Ack { seq } => {
                self.bind_offered(conn);
                let id = self.conns[conn].session.clone().expect("bound");
                let session = self.sessions.get_mut(&id).expect("known");
                session.acked = session.acked.max(seq);
            }
            ClientMessage::Msg { seq, data } => {
                self.bind_offered(conn);
                let id = self.conns[conn].session.clone().expect("bound");
                let session = self.sessions.get_mut(&id).expect("known");
                if seq <= session.upto {
                    return; // a resend of what was processed
                }
                assert_eq!(seq, session.upto + 1, "the server saw a hole");
                session.upto = seq;
                self.processed.push(data);
                self.to(conn, &ServerMessage::Ack { seq });
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The server sends message `n` to the shared connection's session.
    fn push(&mut self) {
        self.pushes += 1;
        let data = ServerMessage::Push {
            seq: self.pushes,
            sent_at_ms: 0,
            body: format!("p{}", self.pushes),
        }
        .to_json();
        if !self.reliable {
            // Plain: to the live connection only (there is at most one).
            if let Some(conn) = self.conns.iter().position(|c| c.open) {
                self.conns[conn].to_client.push_back(data);
            } else {
                self.pushes -= 1;
            }
            return;
        }
        let Some(id) = self.current.clone() else {
            self.pushes -= 1;
            return;
        };
        let session = self.sessions.get_mut(&id).expect("known");
        session.history.push(data.clone());
        let seq = session.history.len() as u64;
        let live = self
            .conns
            .iter()
            .position(|c| c.open && c.session.as_ref() == Some(&id));
        if let Some(conn) = live {
            self.to(conn, &ServerMessage::Msg { seq, data });
        }
    }
}

/// A tab's publish answers as they came: id and outcome.
type Answers = Arc<Mutex<Vec<(u128, Result<u64, PublishError>)>>>;

/// A tab's presence answers as they came: whether it asked for stats,
/// and whether the answer was of that kind.
type QueryAnswers = Arc<Mutex<Vec<(bool, Result<bool, PresenceError>)>>>;

fn member(client_id: &str) -> Member {
    Member {
        client_id: client_id.into(),
        user: None,
        client_name: None,
    }
}

/// A member set's client ids, sorted.
fn ids(members: &[Member]) -> Vec<String> {
    let mut ids: Vec<String> = members.iter().map(|m| m.client_id.clone()).collect();
    ids.sort();
    ids
}

struct Tab {
    runner: Runner,
    closed: bool,
    detached: bool,
    /// The socket the runner opened: its generation and server connection.
    live: Option<(u64, usize)>,
    timers: HashMap<TimerKind, (TimerId, f64)>,
    sent: Vec<String>,
    handed_back: Vec<String>,
    /// The push numbers its application got.
    pushes: Vec<u64>,
    /// Its subscription to [`CH`], if it made one.
    serial: Option<u64>,
    /// The offsets of [`CH`] its application got, and the gaps.
    offsets: Vec<u64>,
    gaps: Vec<(u64, u64)>,
    /// Its publishes (ids), and their answers as they came.
    publishes: Vec<u128>,
    answers: Answers,
    /// Its followed presence of [`CH`] (once the first answer came).
    presence: Option<Presence>,
    /// Its presence queries asked, and their answers as they came.
    queries: usize,
    query_answers: QueryAnswers,
}

struct Sim {
    rng: Rng,
    reliable: bool,
    now: f64,
    next_tick: f64,
    tabs: Vec<Tab>,
    bus: VecDeque<(usize, String)>,
    lock: Option<usize>,
    waiting: VecDeque<usize>,
    server: Server,
    leaders: usize,
}

impl Sim {
    fn new(seed: u64, reliable: bool) -> Self {
        Self {
            rng: Rng(seed),
            reliable,
            now: 0.0,
            next_tick: f64::from(u32::try_from(HEARTBEAT_MS).expect("small")),
            tabs: Vec::new(),
            bus: VecDeque::new(),
            lock: None,
            waiting: VecDeque::new(),
            server: Server {
                reliable,
                ..Server::default()
            },
            leaders: 0,
        }
    }

    fn open_tab(&mut self) {
        let i = self.tabs.len();
        let config = Config::new("ws://127.0.0.1:1/ws")
            .with_reliable(self.reliable)
            .with_queue_capacity(100_000)
            .with_shared_across_tabs("sim");
        let id = u32::try_from(i).expect("a few tabs") + 1;
        let mut runner = Runner::new(config, id, self.rng.below(u64::MAX));
        runner.start(self.now, true);
        // Most tabs subscribe (some before they know any leader).
        let serial =
            (self.rng.below(4) != 0).then(|| runner.subscribe(CH, None).expect("subscribed"));
        // Each subscription follows the channel's presence.
        if let Some(serial) = serial {
            runner.follow_presence(CH, serial);
        }
        self.tabs.push(Tab {
            runner,
            closed: false,
            detached: false,
            live: None,
            timers: HashMap::new(),
            sent: Vec::new(),
            handed_back: Vec::new(),
            pushes: Vec::new(),
            serial,
            offsets: Vec::new(),
            gaps: Vec::new(),
            publishes: Vec::new(),
            answers: Arc::default(),
            presence: None,
            queries: 0,
            query_answers: Arc::default(),
        });
    }

    fn attached(&self) -> Vec<usize> {
        (0..self.tabs.len())
            .filter(|&i| !self.tabs[i].detached)
            .collect()
    }

    fn open(&self) -> Vec<usize> {
        (0..self.tabs.len())
            .filter(|&i| !self.tabs[i].closed)
            .collect()
    }

    /// Performs every step of every tab until none has any.
    fn pump(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.tabs.len() {
                while let Some(step) = self.tabs[i].runner.next(self.now) {
                    any = true;
                    self.perform(i, step);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn grant(&mut self) {
        while let Some(j) = self.waiting.pop_front() {
            if !self.tabs[j].detached {
                self.lock = Some(j);
                self.tabs[j]
                    .runner
                    .tab_input(TabInput::LockAcquired, self.now);
                return;
            }
        }
    }

    fn perform(&mut self, i: usize, step: Step) {
        let now = self.now;
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("{now} t{i} {step:?}");
        }
        match step {
            Step::Socket(effect) => self.socket(i, effect),
            Step::Emit(event) => self.event(i, event),
            Step::Tabs(TabIo::Post(envelope)) => self.bus.push_back((i, envelope.to_json())),
            Step::Tabs(TabIo::TryLock | TabIo::RequestLock) if self.lock.is_none() => {
                self.lock = Some(i);
                self.tabs[i].runner.tab_input(TabInput::LockAcquired, now);
            }
            Step::Tabs(TabIo::TryLock) => self.tabs[i].runner.tab_input(TabInput::LockBusy, now),
            Step::Tabs(TabIo::RequestLock) => self.waiting.push_back(i),
            Step::Tabs(TabIo::StealLock) => {}
            Step::Tabs(TabIo::ReleaseLock | TabIo::Detach) => {
                if matches!(step, Step::Tabs(TabIo::Detach)) {
                    self.tabs[i].detached = true;
                }
                if self.lock == Some(i) {
                    self.lock = None;
                    self.grant();
                } else {
                    self.waiting.retain(|&w| w != i);
                }
            }
            Step::ForgetSocket => {
                let tab = &mut self.tabs[i];
                tab.timers.clear();
                if let Some((_, conn)) = tab.live.take() {
                    self.server.close(conn);
                }
            }
        }
    }

    fn socket(&mut self, i: usize, effect: Effect) {
        let now = self.now;
        match effect {
            Effect::OpenSocket { generation, .. } => {
                if let Some((_, old)) = self.tabs[i].live.take() {
                    self.server.close(old);
                }
                self.leaders += 1;
                let conn = self.server.open(i, generation);
                self.tabs[i].live = Some((generation, conn));
                self.tabs[i].runner.input(Input::Opened { generation }, now);
            }
            Effect::Write {
                generation,
                message,
                hand_back,
            } => {
                let conn = self.tabs[i]
                    .live
                    .filter(|(g, c)| *g == generation && self.server.conns[*c].open)
                    .map(|(_, c)| c);
                if let (Some(conn), Message::Text(text)) = (conn, &message) {
                    self.server.receive(conn, text);
                }
                let written = conn.is_some();
                self.tabs[i]
                    .runner
                    .wrote(generation, message, hand_back, written, now);
            }
            Effect::CloseSocket { generation, .. } => {
                if let Some((g, conn)) = self.tabs[i].live
                    && g == generation
                {
                    self.tabs[i].live = None;
                    self.server.close(conn);
                }
            }
            Effect::DropSocket => {
                if let Some((_, conn)) = self.tabs[i].live.take() {
                    self.server.close(conn);
                }
            }
            Effect::StartTimer { id, delay_ms } => {
                let due = now + delay_ms as f64;
                self.tabs[i].timers.insert(id.kind, (id, due));
            }
            Effect::StopTimer(kind) => {
                self.tabs[i].timers.remove(&kind);
            }
            Effect::RunOpenHook { generation } => self.tabs[i].runner.open_hook_done(generation),
            other => panic!("tab {i}: unexpected {other:?}"),
        }
    }

    fn event(&mut self, i: usize, event: Event) {
        match event {
            Event::Message(Message::Text(text)) => {
                match ServerMessage::from_json(&text).expect("the wire") {
                    ServerMessage::Push { seq, .. } => self.tabs[i].pushes.push(seq),
                    // Unnumbered: the application sees each connection's.
                    ServerMessage::Welcome { .. } => {}
                    other => panic!("tab {i} delivered {other:?}"),
                }
            }
            Event::Dropped { message, reason } => panic!("tab {i} dropped {message:?}: {reason:?}"),
            Event::ResumeFailed { unconfirmed, .. } => {
                panic!("tab {i}: resume failed, {unconfirmed:?} unconfirmed")
            }
            Event::NotShared(why) => panic!("tab {i} went alone: {why}"),
            // The server's history is whole: a gap is a false one.
            Event::Gap { from, to } => panic!("tab {i}: a gap {from}..={to}"),
            Event::Channel(notice) => {
                let tab = &mut self.tabs[i];
                assert!(
                    tab.serial.is_some_and(|s| notice.is_for(CH, s)),
                    "tab {i}: {notice:?}"
                );
                match notice.event() {
                    ChannelEvent::Publication { offset, .. } => tab.offsets.push(*offset),
                    ChannelEvent::Gap { from, to } => tab.gaps.push((*from, *to)),
                    ChannelEvent::Subscribed { .. } => {}
                    event @ (ChannelEvent::Presence(_)
                    | ChannelEvent::Join(_)
                    | ChannelEvent::Leave(_)) => {
                        let presence = &mut tab.presence;
                        if matches!(event, ChannelEvent::Presence(_)) {
                            presence.get_or_insert_with(Presence::default);
                        }
                        // A join or leave before the first answer is in it.
                        if let Some(presence) = presence {
                            presence.apply(event);
                        }
                    }
                    other => panic!("tab {i}: {other:?}"),
                }
            }
            _ => {}
        }
    }

    /// An open tab publishes to [`CH`].
    fn publish(&mut self) {
        let open = self.open();
        let i = open[self.rng.below(open.len() as u64) as usize];
        let id = u128::from(self.rng.below(u64::MAX)) << 64 | u128::from(self.rng.below(u64::MAX));
        let tab = &mut self.tabs[i];
        let answers = Arc::clone(&tab.answers);
        let answer = Box::new(move |result| {
            answers.lock().expect("not poisoned").push((id, result));
        });
        let data = RawJson::parse(&format!("\"t{i} {id:x}\"")).expect("json");
        match tab.runner.publish(CH, data, id, answer) {
            Ok(_) => tab.publishes.push(id),
            Err(PublishError::QueueFull) => {}
            Err(other) => panic!("tab {i}: {other:?}"),
        }
    }

    /// An open tab asks [`CH`]'s presence, or how many.
    fn ask(&mut self) {
        let open = self.open();
        let i = open[self.rng.below(open.len() as u64) as usize];
        let stats = self.rng.below(2) == 0;
        let tab = &mut self.tabs[i];
        let answers = Arc::clone(&tab.query_answers);
        let query = if stats {
            Query::Stats(Box::new(move |result| {
                let result = result.map(|_| true);
                answers.lock().expect("not poisoned").push((true, result));
            }))
        } else {
            Query::Members(Box::new(move |result| {
                let result = result.map(|_| true);
                answers.lock().expect("not poisoned").push((false, result));
            }))
        };
        match tab.runner.presence_query(CH, query) {
            Ok(()) => tab.queries += 1,
            Err(PresenceError::QueueFull) => {}
            Err(other) => panic!("tab {i}: {other:?}"),
        }
    }

    /// Whether open tab `i`'s followed presence is the server's.
    fn presence_settled(&self, i: usize) -> bool {
        let tab = &self.tabs[i];
        let answered = tab.query_answers.lock().expect("not poisoned").len() == tab.queries;
        let members = tab.serial.is_none_or(|_| {
            tab.presence
                .as_ref()
                .is_some_and(|p| ids(&p.members) == ids(&self.server.members()))
        });
        answered && members
    }

    /// Whether open tab `i` delivered [`CH`] up to its last offset and had
    /// every publish answered.
    fn channel_settled(&self, i: usize) -> bool {
        let tab = &self.tabs[i];
        let top = self.server.stream.len() as u64;
        let delivered = tab.serial.is_none_or(|serial| {
            tab.runner
                .channel_position(CH, serial)
                .is_some_and(|p| p.offset == top)
        });
        let answered = tab.answers.lock().expect("not poisoned").len() == tab.publishes.len();
        delivered && answered
    }

    /// One channel message reaches every other attached tab.
    fn deliver_post(&mut self) {
        let Some((from, json)) = self.bus.pop_front() else {
            return;
        };
        for j in self.attached() {
            if j != from {
                self.tabs[j]
                    .runner
                    .tab_input(TabInput::Posted(json.clone()), self.now);
            }
        }
    }

    /// The frames on their way to each client arrive.
    fn deliver_frames(&mut self) {
        for c in 0..self.server.conns.len() {
            let conn = &mut self.server.conns[c];
            let frames: Vec<String> = conn.to_client.drain(..).collect();
            let (tab, generation) = (conn.tab, conn.generation);
            if self.tabs[tab].live.map(|(g, _)| g) != Some(generation) {
                continue;
            }
            for frame in frames {
                let message = Message::Text(frame);
                let input = Input::Message {
                    generation,
                    message,
                };
                self.tabs[tab].runner.input(input, self.now);
            }
        }
    }

    /// The network drops the live connection: frames in flight are lost.
    fn cut(&mut self) {
        for i in 0..self.tabs.len() {
            if let Some((generation, conn)) = self.tabs[i].live {
                self.server.close(conn);
                let closed = Input::Closed {
                    generation,
                    code: 1006,
                    reason: String::new(),
                    was_clean: false,
                };
                self.tabs[i].runner.input(closed, self.now);
            }
        }
    }

    /// Time moves to the next timer or heartbeat tick, which fires. The
    /// channel takes microseconds, the ticks a second: whatever was posted
    /// arrives first (else a new leader would take the channel's backlog
    /// for its predecessor's silence).
    fn advance(&mut self) {
        while !self.bus.is_empty() {
            self.deliver_post();
            self.pump();
        }
        let next_timer = self
            .tabs
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.timers.values().map(move |(id, due)| (*due, i, *id)))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        match next_timer {
            Some((due, i, id)) if due <= self.next_tick => {
                self.now = self.now.max(due);
                self.tabs[i].timers.remove(&id.kind);
                self.tabs[i].runner.input(Input::TimerFired(id), self.now);
            }
            _ => {
                self.now = self.next_tick;
                self.next_tick += HEARTBEAT_MS as f64;
                for j in self.attached() {
                    self.tabs[j].runner.tab_input(TabInput::Tick, self.now);
                }
            }
        }
    }

    fn send(&mut self) {
        let open = self.open();
        let i = open[self.rng.below(open.len() as u64) as usize];
        let tab = &mut self.tabs[i];
        let text = format!("t{i}:{}", tab.sent.len() + 1);
        match tab.runner.send(Message::Text(text.clone())) {
            Ok(_) => tab.sent.push(text),
            Err(SendError::QueueFull(_)) => {}
            Err(other) => panic!("tab {i}: {other:?}"),
        }
    }

    /// The leader tab (or another) closes; a new tab opens.
    fn close_one(&mut self, leader: bool) {
        let open = self.open();
        let pick = open
            .iter()
            .copied()
            .find(|&i| (self.tabs[i].runner.stats(self.now).tab_role == TabRole::Leader) == leader);
        let Some(i) = pick else { return };
        let tab = &mut self.tabs[i];
        tab.runner
            .close(1000, "bye", self.now)
            .expect("a valid close");
        tab.closed = true;
        self.pump();
        let back = self.tabs[i].runner.take_queued();
        self.tabs[i]
            .handed_back
            .extend(back.into_iter().map(|m| match m {
                Message::Text(text) => text,
                Message::Binary(_) => panic!("binary"),
            }));
        self.open_tab();
    }

    fn run(&mut self, rounds: usize) {
        for _ in 0..3 {
            self.open_tab();
        }
        for round in 0..rounds {
            match self.rng.below(14) {
                0..=2 => self.send(),
                3 | 4 if self.reliable => self.server.push(),
                3 | 4 => self.send(),
                12 if self.rng.below(3) == 0 => self.server.toggle_outsider(),
                12 if self.rng.below(2) == 0 => self.ask(),
                12 => self.server.admin_publish(),
                13 => self.publish(),
                5 | 6 => self.deliver_post(),
                7 | 8 => self.deliver_frames(),
                9 | 10 => self.advance(),
                _ if self.reliable && self.rng.below(6) == 0 => self.cut(),
                _ => {}
            }
            // Half the time the close comes with work still queued (an
            // app's callback that closes while the pump runs).
            if self.rng.below(2) == 0 {
                self.pump();
            }
            if round % (rounds / 4) == rounds / 8 {
                self.close_one(true);
            }
            if round % (rounds / 3) == rounds / 6 {
                self.close_one(false);
            }
            self.pump();
        }
        self.settle();
        if !self.reliable {
            // Plain mode: a push reaches every tab through the leader.
            self.server.push();
            self.settle();
        }
        self.judge();
    }

    /// Everything in flight arrives and every timer that matters fires,
    /// until each open tab has its messages confirmed and every push.
    fn settle(&mut self) {
        for _ in 0..20_000 {
            while !self.bus.is_empty() {
                self.deliver_post();
                self.pump();
            }
            self.deliver_frames();
            self.pump();
            let settled = self.bus.is_empty()
                && self.open().iter().all(|&i| {
                    let tab = &self.tabs[i];
                    tab.runner.queue_len() == 0
                        && self.channel_settled(i)
                        && self.presence_settled(i)
                        && tab.pushes.last().copied().unwrap_or(0) == self.server.pushes
                        && (self.reliable || self.server.conns.iter().any(|c| c.open))
                })
                && self.server.conns.iter().all(|c| c.to_client.is_empty());
            if settled {
                return;
            }
            self.advance();
            self.pump();
        }
        let queues: Vec<_> = self
            .open()
            .iter()
            .map(|&i| {
                (
                    i,
                    self.tabs[i].runner.queue_len(),
                    self.tabs[i].pushes.last().copied(),
                    self.channel_settled(i),
                    self.presence_settled(i),
                )
            })
            .collect();
        panic!(
            "not settled: (tab, queue, last push, channel, presence) {queues:?}, pushes {}, lock {:?}",
            self.server.pushes, self.lock
        );
    }

    /// Tab `i`'s channel: each offset once, in order, no gap, up to the
    /// last if it is open; each publish answered once, with its offset.
    fn judge_channel(&self, i: usize) {
        let tab = &self.tabs[i];
        assert!(tab.gaps.is_empty(), "tab {i}: gaps {:?}", tab.gaps);
        assert!(
            tab.offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "tab {i}: each offset once, in order: {:?}",
            tab.offsets
        );
        if tab.closed {
            return;
        }
        if tab.serial.is_some() && !tab.offsets.is_empty() {
            assert_eq!(
                tab.offsets.last().copied(),
                Some(self.server.stream.len() as u64),
                "tab {i}"
            );
        }
        let answers = tab.answers.lock().expect("not poisoned");
        assert_eq!(
            answers.len(),
            tab.publishes.len(),
            "tab {i}: answered once each"
        );
        for (id, result) in answers.iter() {
            let offset = self.server.publish_ids.get(&format!("{id:032x}"));
            assert_eq!(result.as_ref().ok(), offset, "tab {i}: publish {id:x}");
        }
        self.judge_presence(i);
    }

    /// Open tab `i`'s presence: its followed set is the server's, the
    /// shared connection in it once; each query answered once, in kind.
    fn judge_presence(&self, i: usize) {
        let tab = &self.tabs[i];
        let answers = tab.query_answers.lock().expect("not poisoned");
        assert_eq!(answers.len(), tab.queries, "tab {i}: each query answered");
        for (stats, result) in answers.iter() {
            assert_eq!(result, &Ok(true), "tab {i}: a query (stats {stats})");
        }
        if tab.serial.is_none() {
            return;
        }
        let presence = tab.presence.as_ref().expect("followed");
        let server = ids(&self.server.members());
        assert_eq!(ids(&presence.members), server, "tab {i}: the members");
        let connections = server.iter().filter(|id| id.starts_with('c')).count();
        assert_eq!(connections, 1, "tab {i}: the shared connection once");
    }

    fn judge(&self) {
        for (i, tab) in self.tabs.iter().enumerate() {
            let mine: Vec<&String> = self
                .server
                .processed
                .iter()
                .filter(|m| m.starts_with(&format!("t{i}:")))
                .collect();
            let expected: Vec<&String> = tab
                .sent
                .iter()
                .filter(|m| !tab.handed_back.contains(m))
                .collect();
            assert_eq!(mine, expected, "tab {i}: processed once each, in order");
            assert!(
                tab.sent.ends_with(&tab.handed_back),
                "tab {i}: only its last messages handed back"
            );
            assert!(
                tab.pushes.windows(2).all(|w| w[1] == w[0] + 1),
                "tab {i}: each push once, in order, no hole: {:?}",
                tab.pushes
            );
            if !tab.closed {
                assert_eq!(
                    tab.pushes.last().copied(),
                    Some(self.server.pushes),
                    "tab {i}"
                );
            }
            self.judge_channel(i);
        }
        let mut data = self.server.stream.clone();
        data.sort();
        data.dedup();
        assert_eq!(data.len(), self.server.stream.len(), "each publish once");
        assert!(self.leaders >= 3, "the connection changed hands");
        let subscribed = self.tabs.iter().filter(|t| t.serial.is_some()).count();
        assert!(
            subscribed > 1 && !self.server.stream.is_empty(),
            "channel traffic"
        );
        let asked: usize = self.tabs.iter().map(|t| t.queries).sum();
        assert!(
            self.server.toggles > 0 && asked > 0,
            "presence traffic: {} joins and leaves, {asked} queries",
            self.server.toggles
        );
    }
}

#[test]
fn reliable_tabs_over_cuts_and_leader_closes_lose_and_double_nothing() {
    for seed in 1..=12 {
        eprintln!("seed {seed}");
        let mut sim = Sim::new(seed, true);
        sim.run(1_500);
        assert!(sim.server.processed.len() > 100, "seed {seed}: traffic");
    }
}

#[test]
fn plain_tabs_over_leader_closes_lose_and_double_nothing() {
    for seed in 1..=12 {
        let mut sim = Sim::new(seed, false);
        sim.run(1_500);
        assert!(sim.server.processed.len() > 100, "seed {seed}: traffic");
    }
}
