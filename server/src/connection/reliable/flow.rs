//! A bound reliable connection's traffic: `resume`, `ack` and `msg` after
//! the first message, the numbered answers, the bursts' batches as the
//! window and the pacer allow, timed pushes, and the batched acks.

use std::time::{Instant, SystemTime};

use axum::extract::ws::Message;
use shared::{ClientMessage, ErrorCode, ResumeFailure, ServerMessage};

use super::{ACK_DELAY, ACK_EVERY, Link};
use crate::clock::millis;
use crate::connection::End;
use crate::connection::app::{self, Served};
use crate::connection::burst::Pacer;
use crate::metrics::Metrics;
use crate::queue;
use crate::registry::Outbound;
use crate::reliable::{
    Accepted, BurstBusy, Outgoing, Refused, SessionRef, SessionStore, TakenOver, To, lock,
};
use crate::state::AppState;
use crate::wire;

impl Link {
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
                self.on_msg(seq, (&data, None), state, outbound).await
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

    /// Client `msg` number `seq` whose content the dispatch decoded
    /// already (`request`, from `data`).
    pub(crate) async fn on_msg_decoded(
        &mut self,
        (seq, data): (u64, &str),
        request: Result<ClientMessage, shared::DecodeError>,
        state: &AppState,
        (client_id, outbound): (&str, &queue::Sender),
    ) -> Result<(), End> {
        self.stored(state, client_id).await?;
        self.on_msg(seq, (data, Some(request)), state, outbound)
            .await
    }

    /// Client `msg` number `seq`, processed exactly once: accepted, served
    /// and its reply numbered in one step of the session. Its content is
    /// `data`, or `decoded` from it already (a retry decodes it again).
    async fn on_msg(
        &mut self,
        seq: u64,
        (data, decoded): (&str, Option<Result<ClientMessage, shared::DecodeError>>),
        state: &AppState,
        outbound: &queue::Sender,
    ) -> Result<(), End> {
        let max_burst = state.config.max_burst;
        let now = Instant::now();
        let mut decoded = decoded;
        // Numbered and queued under the session's lock (see the module doc).
        let mut accept = |session: &SessionRef| {
            let mut session = lock(session);
            let request = decoded
                .take()
                .unwrap_or_else(|| ClientMessage::from_json(data));
            let accepted = session.accept(self.conn(), seq, now, |session| match request {
                Ok(request) => match app::serve(request, max_burst) {
                    Served::Reply(reply) => Some(reply),
                    Served::Burst(count) => session
                        .start_burst(count, now)
                        .err()
                        .map(|BurstBusy| app::burst_busy()),
                },
                Err(err) => Some(app::error(err.code(), err.to_string())),
            })?;
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

    /// Where client `msg` number `seq` stands before it is served: the
    /// next one (`None`), or its answer now (a duplicate acknowledged, one
    /// out of order refused). For a request served outside the session's
    /// lock (a channel's, which waits for the streams), then answered by
    /// [`Link::accept_reply`].
    pub(crate) async fn peek(
        &mut self,
        seq: u64,
        state: &AppState,
        (client_id, outbound): (&str, &queue::Sender),
    ) -> Result<bool, End> {
        let session = self.stored(state, client_id).await?;
        let last_in = {
            let session = lock(&session);
            if !session.is_attached(self.conn()) {
                return Err(TakenOver.into());
            }
            session.last_in()
        };
        if seq <= last_in {
            self.count_for_ack(outbound);
            return Ok(false);
        }
        if seq > last_in + 1 {
            let refusal = app::error(
                ErrorCode::OutOfOrder,
                format!(
                    "msg {seq} skips ahead: {} is next; it was not processed",
                    last_in + 1
                ),
            );
            outbound.force_send(Outbound::Frame(wire::text(&refusal)));
            return Ok(false);
        }
        Ok(true)
    }

    /// Client `msg` number `seq`, served already ([`Link::peek`]): it is
    /// accepted with `reply`, numbered.
    pub(crate) async fn accept_reply(
        &mut self,
        seq: u64,
        reply: ServerMessage,
        state: &AppState,
        outbound: &queue::Sender,
    ) -> Result<(), End> {
        let now = Instant::now();
        let accept = |session: &SessionRef| {
            let mut session = lock(session);
            let accepted = session.accept(self.conn(), seq, now, |_| Some(reply.clone()))?;
            if let Accepted::Processed(Some(frame)) = &accepted {
                outbound.force_send(Outbound::Frame(Message::Text(frame.clone())));
            }
            Ok::<_, Refused>(())
        };
        let session = self.session()?;
        match accept(session) {
            Err(Refused::Full) => {
                state.reliable.reclaim().await;
                accept(session)?;
            }
            other => other?,
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
    pub(in crate::connection) fn pace(
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
