//! The link between a reliable connection (`/ws?reliable=1`) and its
//! session: nothing but the welcome goes out until the client's first
//! message binds the connection (to the session it resumes, or to the one
//! the welcome offered). The offered session is stored only when it first
//! numbers a message either way (a client `msg` or `ack`, a reply, a push,
//! `?burst=N`): a connection that never does (a failed `resume` probe, say)
//! leaves nothing behind, and storing it is where `--max-sessions` and
//! `--max-sessions-per-ip` close with 1013. Every application message is
//! then numbered by
//! [`Session::send`](crate::reliable::Session::send) and queued under the
//! session's lock, as the registry's pushes are, so that the wire order is
//! the seq order; bursts are made as the window and the connection's burst
//! pacer (`burst.rs`) allow, a batch at a time, queued as one item;
//! client `msg`s pass the exactly-once filter and are acknowledged in
//! batches.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use axum::extract::ws::Message;
use shared::{ClientMessage, ErrorCode, ResumeFailure, ServerMessage};

use super::End;
use super::app::{self, Served};
use super::burst::Pacer;
use crate::logsafe;
use crate::metrics::Metrics;
use crate::queue;
use crate::registry::{Outbound, millis};
use crate::reliable::{
    Accepted, Attach, BurstBusy, Outgoing, Refused, ResumeError, SessionRef, SessionStore,
    TakenOver, TakeoverSignal, To, TooMany, lock,
};
use crate::state::AppState;
use crate::wire;

/// Acknowledge after this many client messages...
const ACK_EVERY: u32 = 32;
/// ...or this long after the first unacknowledged one.
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// A reliable connection's side of its session.
pub(crate) struct Link {
    /// The session id and token offered in the welcome.
    offer: (String, String),
    /// This connection, as the session knows it.
    attach: Attach,
    /// The client address, keyed as `--max-sessions-per-ip` counts it.
    owner: IpAddr,
    /// Whether the first message arrived (a later `resume` is refused).
    bound: bool,
    /// The session, once stored (resumed, or the offered one at its first
    /// numbered message).
    session: Option<SessionRef>,
    /// The same, for the registry (admin pushes, the client list).
    slot: Arc<OnceLock<SessionRef>>,
    /// `?burst=N`, started when a new session is bound.
    pending_burst: Option<u32>,
    /// Client messages processed since the last ack.
    unacked_in: u32,
    /// When the next ack is due, if one is.
    ack_due: Option<tokio::time::Instant>,
}

impl Link {
    /// The link of connection `conn` of `user` (token mode) from `client`,
    /// which asked for `?burst=N` and hears of a takeover through `signal`.
    pub(crate) fn new(
        conn: u64,
        burst: Option<u32>,
        (signal, user): (Arc<dyn TakeoverSignal>, Option<Arc<str>>),
        (client, protocol): (IpAddr, shared::Protocol),
    ) -> Self {
        Self {
            offer: crate::reliable::offer(),
            attach: Attach {
                conn,
                user,
                signal,
                protocol,
            },
            owner: crate::limits::key(client),
            bound: false,
            session: None,
            slot: Arc::default(),
            pending_burst: burst,
            unacked_in: 0,
            ack_due: None,
        }
    }

    /// The session id and token the welcome offers.
    pub(crate) fn offer(&self) -> (&str, &str) {
        (&self.offer.0, &self.offer.1)
    }

    /// The registry's view of the session, set once bound.
    pub(crate) fn slot(&self) -> Arc<OnceLock<SessionRef>> {
        self.slot.clone()
    }

    fn conn(&self) -> u64 {
        self.attach.conn
    }

    fn bind(&mut self, session: SessionRef) {
        self.session = Some(session.clone());
        let _ = self.slot.set(session);
    }

    /// The client's first message binds the connection: a `resume` to the
    /// session it names (or, failing that, to the offered one), anything
    /// else to the offered one. Returns whether `message` was consumed.
    pub(crate) async fn bind_first(
        &mut self,
        message: &ClientMessage,
        state: &AppState,
        client_id: &str,
        outbound: &queue::Sender,
    ) -> Result<bool, End> {
        if self.bound {
            return Ok(false);
        }
        self.bound = true;
        if let ClientMessage::Resume {
            session,
            token,
            last_seq,
        } = message
        {
            self.resume(session, token, *last_seq, state, client_id, outbound)
                .await?;
            return Ok(true);
        }
        self.bind_new(state, client_id).await?;
        Ok(false)
    }

    /// Binds the connection to the session its welcome offered: stored at
    /// once only for `?burst=N` (its pushes are numbered right away), else
    /// at its first numbered message ([`Link::stored`]).
    async fn bind_new(&mut self, state: &AppState, client_id: &str) -> Result<(), End> {
        if self.pending_burst.is_some() {
            self.stored(state, client_id).await?;
        }
        Ok(())
    }

    /// The session, storing the offered one if it is not yet: at
    /// `--max-sessions`, or `--max-sessions-per-ip` for this client, the
    /// connection ends with 1013 instead. A `?burst=N` starts on storing.
    async fn stored(&mut self, state: &AppState, client_id: &str) -> Result<SessionRef, End> {
        if let Some(session) = &self.session {
            return Ok(session.clone());
        }
        let now = Instant::now();
        let created = state
            .reliable
            .create(
                self.offer.clone(),
                client_id,
                self.owner,
                self.attach.clone(),
                now,
            )
            .await;
        let session = match created {
            Ok(session) => session,
            Err(TooMany::Sessions) => {
                tracing::warn!("refused a reliable session: --max-sessions reached");
                return Err(End::too_many_sessions());
            }
            Err(TooMany::PerIp) => {
                tracing::info!(owner = %self.owner, "refused a reliable session: --max-sessions-per-ip reached");
                return Err(End::too_many_sessions());
            }
            Err(TooMany::PerUser) => {
                tracing::info!("refused a reliable session: --max-sessions-per-user reached");
                return Err(End::too_many_sessions());
            }
            Err(TooMany::Unavailable) => {
                tracing::warn!("refused a reliable session: the session store is unavailable");
                return Err(End::store_unavailable());
            }
        };
        if let Some(count) = self.pending_burst.take() {
            if count > state.config.max_burst {
                tracing::info!("refused ?burst={count}: over --max-burst");
            } else {
                // A new session has no burst pending: never busy.
                let _ = lock(&session).start_burst(count, now);
            }
        }
        self.bind(session.clone());
        Ok(session)
    }

    /// Binds the connection to the session it resumes, or on failure to the
    /// one its welcome offered; either way says so first.
    async fn resume(
        &mut self,
        id: &str,
        token: &str,
        last_seq: u64,
        state: &AppState,
        client_id: &str,
        outbound: &queue::Sender,
    ) -> Result<(), End> {
        let resumed = state
            .reliable
            .resume(
                id,
                token,
                last_seq,
                client_id,
                self.attach.clone(),
                Instant::now(),
            )
            .await;
        match resumed {
            Ok((session, resume)) => {
                let mut frames = vec![wire::text(&ServerMessage::Resumed {
                    last_seq: resume.last_in,
                })];
                if let Some((from, to)) = resume.gap {
                    tracing::info!(session = %logsafe::escape(id), from, to, "resumed with a gap");
                    frames.push(wire::text(&ServerMessage::Gap { from, to }));
                }
                tracing::debug!(
                    session = %logsafe::escape(id),
                    client_last_seq = last_seq,
                    last_in = resume.last_in,
                    replay = resume.replay.len(),
                    "resumed"
                );
                frames.extend(resume.replay.into_iter().map(Message::Text));
                // Queued before the registry may push to the session (it
                // pushes only to a bound connection): the replay comes
                // first. Bound before the loop writes them, so that the
                // session is written through before they go out.
                outbound.force_send(Outbound::Frames(frames));
                self.pending_burst = None;
                self.bind(session);
            }
            Err(ResumeError::Unavailable) => {
                tracing::warn!(session = %logsafe::escape(id), "resume refused: the session store is unavailable");
                return Err(End::store_unavailable());
            }
            Err(ResumeError::Failed(reason)) => {
                tracing::info!(session = %logsafe::escape(id), %reason, "resume failed");
                outbound.force_send(Outbound::Frame(wire::text(&ServerMessage::ResumeFailed {
                    reason,
                })));
                self.bind_new(state, client_id).await?;
            }
        }
        Ok(())
    }

    /// The bound session (binding comes first in the dispatch).
    fn session(&self) -> Result<&SessionRef, End> {
        self.session
            .as_ref()
            .ok_or_else(|| End::gone("reliable connection without a session"))
    }

    /// A `resume`, `ack` or `msg` after the first message.
    pub(crate) async fn on_control(
        &mut self,
        message: ClientMessage,
        state: &AppState,
        client_id: &str,
        outbound: &queue::Sender,
    ) -> Result<(), End> {
        match message {
            ClientMessage::Ack { seq } => {
                let session = self.stored(state, client_id).await?;
                let mut session = lock(&session);
                if !session.is_attached(self.conn()) {
                    return Err(TakenOver.into());
                }
                session.ack(seq);
                Ok(())
            }
            ClientMessage::Msg { seq, data } => {
                self.stored(state, client_id).await?;
                self.on_msg(seq, &data, state, outbound).await
            }
            _ => {
                let not_first = ServerMessage::ResumeFailed {
                    reason: ResumeFailure::NotFirst,
                };
                outbound.force_send(Outbound::Frame(wire::text(&not_first)));
                Ok(())
            }
        }
    }

    /// Client `msg` number `seq`, processed exactly once: accepted, served
    /// and its reply numbered in one step of the session.
    async fn on_msg(
        &mut self,
        seq: u64,
        data: &str,
        state: &AppState,
        outbound: &queue::Sender,
    ) -> Result<(), End> {
        let max_burst = state.config.max_burst;
        let now = Instant::now();
        // Numbered and queued under the session's lock (see the module doc).
        let accept = |session: &SessionRef| {
            let mut session = lock(session);
            let accepted =
                session.accept(
                    self.conn(),
                    seq,
                    now,
                    |session| match ClientMessage::from_json(data) {
                        Ok(request) => match app::serve(request, max_burst) {
                            Served::Reply(reply) => Some(reply),
                            Served::Burst(count) => session
                                .start_burst(count, now)
                                .err()
                                .map(|BurstBusy| app::burst_busy()),
                        },
                        Err(err) => Some(app::error(err.code(), err.to_string())),
                    },
                )?;
            if let Accepted::Processed(Some(frame)) = &accepted {
                outbound.force_send(Outbound::Frame(Message::Text(frame.clone())));
            }
            Ok::<_, Refused>(accepted)
        };
        let session = self.session()?;
        let accepted = match accept(session) {
            // Perhaps over the store's budget: clients that are away give
            // way first (here or in the sweep, woken by the refusal), then
            // one more try.
            Err(Refused::Full) => {
                state.reliable.reclaim().await;
                accept(session)?
            }
            other => other?,
        };
        if let Accepted::OutOfOrder { expected } = accepted {
            let refusal = app::error(
                ErrorCode::OutOfOrder,
                format!("msg {seq} skips ahead: {expected} is next; it was not processed"),
            );
            outbound.force_send(Outbound::Frame(wire::text(&refusal)));
            return Ok(());
        }
        self.count_for_ack(outbound);
        Ok(())
    }

    /// Delivers the answer to an unnumbered request (`echo`, `burst` not
    /// wrapped in a `msg`): numbered all the same, as every application
    /// message of a session is, and bounded by its history.
    pub(crate) async fn deliver(
        &mut self,
        served: Served,
        state: &AppState,
        client_id: &str,
        outbound: &queue::Sender,
    ) -> Result<(), End> {
        let session = self.stored(state, client_id).await?;
        let now = Instant::now();
        let to = To::Connection(self.conn());
        let reply = match served {
            Served::Reply(reply) => reply,
            Served::Burst(count) => {
                let mut session = lock(&session);
                if !session.is_attached(self.conn()) {
                    return Err(TakenOver.into());
                }
                match session.start_burst(count, now) {
                    Ok(()) => return Ok(()),
                    Err(BurstBusy) => app::burst_busy(),
                }
            }
        };
        // Numbered and queued under the session's lock (see the module doc).
        let send = |reply: ServerMessage| {
            let mut session = lock(&session);
            let frame = session.send(to, Outgoing::Message(reply), now)?;
            outbound.force_send(Outbound::Frame(Message::Text(frame)));
            Ok::<_, Refused>(())
        };
        match send(reply.clone()) {
            // Perhaps over the store's budget: as in `on_msg`.
            Err(Refused::Full) => {
                state.reliable.reclaim().await;
                send(reply)?;
            }
            other => other?,
        }
        Ok(())
    }

    /// Whether a burst can make its next push now.
    pub(crate) fn burst_ready(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| lock(session).burst_ready())
    }

    /// The next pushes (or `burst_done` after the last) of the session's
    /// bursts: as many as the window and `pacer` allow, with `room` bytes
    /// left under the queue's bound (`None`: no bound), each numbered under
    /// the session's lock, and queued together as one item.
    pub(super) fn pace(
        &self,
        outbound: &queue::Sender,
        pacer: &mut Pacer,
        room: Option<usize>,
    ) -> Result<(), End> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let mut session = lock(session);
        if !session.burst_ready() {
            return Ok(());
        }
        // How many the session's bursts have left is the session's: the
        // batch is the most the pacer allows.
        let Some(mut batch) = pacer.grant(u32::MAX, room, tokio::time::Instant::now()) else {
            return Ok(());
        };
        let (sent_at_ms, now) = (millis(SystemTime::now()), Instant::now());
        let mut frames = Vec::new();
        let mut taken_over = false;
        while batch.admits() && session.burst_ready() {
            match session.burst_step(self.conn(), sent_at_ms, now) {
                Ok(Some(frame)) => {
                    batch.add(frame.len());
                    frames.push(Message::Text(frame));
                }
                Ok(None) => break,
                // Ready meant the window had room: nothing to do but wait for acks.
                Err(Refused::Full) => break,
                Err(Refused::TakenOver) => {
                    taken_over = true;
                    break;
                }
            }
        }
        pacer.spent(batch.made());
        if !frames.is_empty() {
            outbound.force_send(Outbound::Frames(frames));
        }
        if taken_over {
            return Err(TakenOver.into());
        }
        Ok(())
    }

    /// A timed push, numbered if the window has room (none before binding;
    /// the first stores the offered session); counted as dropped otherwise.
    pub(crate) async fn timed_push(
        &mut self,
        outbound: &queue::Sender,
        state: &AppState,
        client_id: &str,
    ) -> Result<(), End> {
        if !self.bound {
            return Ok(());
        }
        let metrics = &state.metrics;
        let session = self.stored(state, client_id).await?;
        let Ok(permit) = outbound.try_reserve() else {
            Metrics::add(&metrics.pushes_dropped, 1);
            return Ok(());
        };
        let mut session = lock(&session);
        if !session.window_open() {
            Metrics::add(&metrics.pushes_dropped, 1);
            return Ok(());
        }
        let push = Outgoing::Push {
            body: "tick".into(),
            sent_at_ms: millis(SystemTime::now()),
        };
        match session.send(To::Connection(self.conn()), push, Instant::now()) {
            Ok(frame) => permit.send(Outbound::Frame(Message::Text(frame))),
            // Taken over: the driver closes on the token.
            Err(_) => Metrics::add(&metrics.pushes_dropped, 1),
        }
        Ok(())
    }

    /// When the next ack is due, if one is.
    pub(crate) fn ack_due(&self) -> Option<tokio::time::Instant> {
        self.ack_due
    }

    /// One more client message to acknowledge: now after [`ACK_EVERY`], else soon.
    fn count_for_ack(&mut self, outbound: &queue::Sender) {
        self.unacked_in += 1;
        if self.unacked_in >= ACK_EVERY {
            self.send_ack(outbound);
        } else if self.ack_due.is_none() {
            self.ack_due = Some(tokio::time::Instant::now() + ACK_DELAY);
        }
    }

    /// Acknowledges every client message processed so far (retried later if the queue is full).
    pub(crate) fn send_ack(&mut self, outbound: &queue::Sender) {
        let Some(session) = &self.session else {
            self.ack_due = None;
            return;
        };
        let seq = lock(session).last_in();
        let ack = Outbound::Frame(wire::text(&ServerMessage::Ack { seq }));
        if outbound.try_send(ack).is_ok() {
            self.unacked_in = 0;
            self.ack_due = None;
        } else {
            self.ack_due = Some(tokio::time::Instant::now() + ACK_DELAY);
        }
    }

    /// The connection ended: the session waits for a resume (in Redis,
    /// written through in the background: the connection is gone; a
    /// detach Redis does not take is retried by the store's sweep).
    pub(crate) fn detach(&self, state: &AppState) {
        if let Some(session) = &self.session {
            let mut guard = lock(session);
            guard.detach(self.conn(), Instant::now());
            if guard.is_written_through() {
                drop(guard);
                let (store, session) = (state.reliable.clone(), session.clone());
                tokio::spawn(async move { store.detached(&session).await });
            }
        }
    }
}
