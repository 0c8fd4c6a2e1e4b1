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
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Link`]: binding on the first message, a new session stored, a resume |
//! | `flow.rs` | the bound connection's traffic: control messages, numbered answers, bursts, timed pushes, acks |

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::ws::Message;
use shared::{ClientMessage, ServerMessage};

use super::End;
use crate::logsafe;
use crate::queue;
use crate::registry::Outbound;
use crate::reliable::{
    Attach, ResumeError, SessionRef, SessionStore, TakeoverSignal, TooMany, lock,
};
use crate::state::AppState;
use crate::wire;

mod flow;

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
    /// The id of the session the connection is bound to, once it is.
    pub(crate) fn session_id(&self) -> Option<String> {
        self.session
            .as_ref()
            .map(|session| lock(session).id().to_owned())
    }

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
}
