//! The driver: reads frames and dispatches each client message in ONE place
//! for both modes, ticks the timed pushes and pings, watches the idle
//! deadline and in token mode the token's expiry (one timer for both, and
//! both checked at every turn of the loop, whatever woke it),
//! in-band token refreshes, kicks, takeovers and shutdown. Generic over the stream it reads,
//! so it runs on in-memory channels in the unit tests.
//!
//! Timed pushes are only queued when the queue is empty, so they never pile
//! up behind a slow client; pushes that find no room are counted as dropped.

use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Stream, StreamExt};
use shared::{ClientMessage, ErrorCode, ServerMessage};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::app::{self, Served};
use super::reliable::Link;
use super::{CLOSE_GRACE, Conn, End, Mode};
use crate::metrics::Metrics;
use crate::queue;
use crate::registry::{Outbound, millis};
use crate::state::AppState;
use crate::timer::{Due, tick, ticker};
use crate::wire::{self, ReadError};

pub(super) struct Driver<'a, S> {
    stream: S,
    outbound: queue::Sender,
    state: &'a AppState,
    conn: &'a Conn,
    bad_in_a_row: u32,
    /// Reliable mode: the link to the session; `None` on a plain connection.
    link: Option<Box<Link>>,
    /// A plain connection's `?burst=N`, queued after the welcome.
    burst: Option<u32>,
    /// Token mode: when the token (plus the leeway) runs out, unless refreshed.
    expiry: Option<tokio::time::Instant>,
    /// A refresh moved `expiry`: the deadline timer is re-armed.
    rearm: bool,
    /// When the last refresh was checked: one per `--refresh-interval`.
    last_refresh: Option<tokio::time::Instant>,
    /// Refreshes refused or rate-limited in a row: the third closes with 4401.
    bad_refreshes: u8,
    /// The last refusal logged, and how many were not logged since.
    refusal_logged: (Option<tokio::time::Instant>, u32),
}

/// A future that completes at `due`, or never.
async fn at(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

impl<'a, S> Driver<'a, S>
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    pub(super) fn new(
        stream: S,
        outbound: queue::Sender,
        state: &'a AppState,
        conn: &'a Conn,
        mode: Mode,
    ) -> Self {
        let (link, burst) = match mode {
            Mode::Plain { burst } => (None, burst),
            Mode::Reliable(link) => (Some(link), None),
        };
        Self {
            stream,
            outbound,
            state,
            conn,
            bad_in_a_row: 0,
            link,
            burst,
            expiry: conn.expiry,
            rearm: false,
            last_refresh: None,
            bad_refreshes: 0,
            refusal_logged: (None, 0),
        }
    }

    /// Runs the connection (its welcome is already queued) to its end, then
    /// has the writer send the close frame.
    pub(super) async fn run(
        mut self,
        close_tx: oneshot::Sender<CloseFrame>,
        writer_gone: &CancellationToken,
    ) -> End {
        let config = &self.state.config;
        // Boxed, as every rare path: inline, its state would be held by the
        // future of every connection for its whole life.
        if let Some(count) = self.burst.take() {
            Box::pin(self.deliver(app::serve(ClientMessage::Burst { count }, config.max_burst)))
                .await;
        }
        let mut push_tick = ticker(config.push_interval);
        let mut ping_tick = ticker(config.ping_interval);
        // One timer for the idle deadline and the token's expiry (timer::due).
        let idle = tokio::time::sleep_until(crate::timer::first(
            crate::timer::later(tokio::time::Instant::now(), config.idle_timeout),
            self.expiry,
        ));
        tokio::pin!(idle);
        let mut last_heard = tokio::time::Instant::now();
        let shutdown = self.state.shutdown.clone();
        // Made once, not at every turn of the loop: each registers with its
        // `Notify` (a lock) when polled and leaves it when dropped.
        let conn = self.conn;
        let shutting_down = shutdown.cancelled();
        let writer_ended = writer_gone.cancelled();
        let close_request = conn.shared.close_requested();
        tokio::pin!(shutting_down, writer_ended, close_request);
        // For reliable bursts: a permit borrows its sender across the select's handlers.
        let burst_outbound = self.outbound.clone();

        let end = loop {
            // Every deadline, whatever branch woke the loop: the select is
            // biased towards the stream, so under a flood of frames its
            // timer branch is never polled (a client that never stops
            // sending pongs was never closed at its token's exp).
            match crate::timer::overdue(
                tokio::time::Instant::now(),
                last_heard,
                config.idle_timeout,
                self.expiry,
            ) {
                Due::NotYet => {}
                Due::Idle => {
                    tracing::info!("closing an idle connection after {:?}", config.idle_timeout);
                    break End::idle();
                }
                Due::Expired => break End::token_expired(),
            }
            tokio::select! {
                biased;
                () = &mut shutting_down => break End::shutdown(),
                () = &mut writer_ended => break End::gone("connection ended"),
                // Kicks, a replacement, and a takeover of the reliable session.
                request = &mut close_request => {
                    break End::with(request.code, request.reason);
                }
                frame = self.stream.next() => {
                    last_heard = tokio::time::Instant::now();
                    match frame {
                        Some(Ok(message)) => {
                            if let Err(end) = Box::pin(self.on_message(message)).await {
                                break end;
                            }
                            if self.rearm {
                                // A refresh: rare, so the timer may move here.
                                self.rearm = false;
                                let idle_at = crate::timer::later(last_heard, config.idle_timeout);
                                idle.as_mut().reset(crate::timer::first(idle_at, self.expiry));
                            }
                        }
                        Some(Err(err)) => {
                            break match wire::close_for(&ReadError::from(err)) {
                                Some((code, reason)) => End::with(code, reason),
                                None => End::gone("connection failed"),
                            };
                        }
                        None => break End::gone("connection ended"),
                    }
                }
                permit = burst_outbound.reserve(), if self.link.as_ref().is_some_and(|link| link.burst_ready()) => {
                    if let (Ok(permit), Some(link)) = (permit, &self.link)
                        && let Err(end) = link.burst_step(permit)
                    {
                        break end;
                    }
                }
                () = at(self.link.as_ref().and_then(|link| link.ack_due())) => {
                    if let Some(link) = &mut self.link {
                        link.send_ack(&self.outbound);
                    }
                }
                Some(()) = tick(&mut push_tick) => {
                    // Boxed: once a second is rare next to a connection's life.
                    if let Err(end) = Box::pin(self.timed_push()).await {
                        break end;
                    }
                }
                Some(()) = tick(&mut ping_tick) => {
                    // Skipped when the queue has no room: the peer is behind anyway.
                    let _ = self.outbound.try_send(Outbound::Frame(Message::Ping(Default::default())));
                }
                () = &mut idle => {
                    match crate::timer::due(idle.as_mut(), last_heard, config.idle_timeout, self.expiry) {
                        Due::NotYet => {}
                        Due::Idle => {
                            tracing::info!("closing an idle connection after {:?}", config.idle_timeout);
                            break End::idle();
                        }
                        Due::Expired => break End::token_expired(),
                    }
                }
            }
        };
        // The writer ends once every sender is gone.
        drop(burst_outbound);
        if let Some(link) = &self.link {
            link.detach(self.state);
        }
        Box::pin(self.finish(end, close_tx)).await
    }

    /// Asks the writer to send the close frame, then reads until the peer's
    /// close reply or the grace period ends.
    async fn finish(mut self, end: End, close_tx: oneshot::Sender<CloseFrame>) -> End {
        let Some(code) = end.code else {
            return end;
        };
        let _ = close_tx.send(CloseFrame {
            code,
            reason: Utf8Bytes::from(end.reason.clone()),
        });
        // Stop queueing; the writer ends once it has sent the close frame.
        drop(self.outbound);
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
        end
    }

    /// Queues `message` unnumbered, waiting for room (backpressure on the
    /// reader). A closed queue means the writer is gone; the loop sees it next.
    async fn send(&self, message: Message) {
        let _ = self.outbound.send(Outbound::Frame(message)).await;
    }

    async fn on_message(&mut self, message: Message) -> Result<(), End> {
        let len = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
            // Control frames only prove the peer is alive (tungstenite answers pings).
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Close(frame) => {
                // tungstenite queues the close reply; keep reading until the stream ends.
                let (code, reason) = frame
                    .as_ref()
                    .map_or((None, ""), |f| (Some(f.code), &*f.reason));
                tracing::debug!(?code, reason = %crate::logsafe::escape(reason), "client closed");
                return Ok(());
            }
        };
        let metrics = &self.state.metrics;
        Metrics::add(&metrics.messages_in, 1);
        Metrics::add(&metrics.bytes_in, len as u64);
        self.conn.shared.messages_in.fetch_add(1, Relaxed);
        match message {
            Message::Text(text) => self.on_text(&text).await,
            // Binary frames are echoed as they are, in both modes.
            other => {
                self.send(other).await;
                Ok(())
            }
        }
    }

    /// Decodes one text frame and dispatches it.
    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        match ClientMessage::from_json(text) {
            Ok(message) => {
                self.bad_in_a_row = 0;
                self.dispatch(message).await
            }
            Err(err) => {
                self.bad_in_a_row += 1;
                self.send(wire::error(err.code(), err.to_string())).await;
                if self.bad_in_a_row >= self.state.config.max_bad_messages {
                    return Err(End::too_many_bad());
                }
                Ok(())
            }
        }
    }

    /// The one dispatch of client messages, for both modes.
    async fn dispatch(&mut self, message: ClientMessage) -> Result<(), End> {
        // Reliable mode: the first message binds the connection to a session.
        if let Some(link) = &mut self.link {
            let consumed = link
                .bind_first(&message, self.state, &self.conn.client_id, &self.outbound)
                .await?;
            if consumed {
                return Ok(());
            }
        }
        match message {
            // The heartbeat is connection-scoped: answered directly, never numbered.
            ClientMessage::Ping { t } => {
                self.send(wire::text(&ServerMessage::Pong { t })).await;
                Ok(())
            }
            // So is a refresh of the connection's token.
            ClientMessage::Refresh { token } => {
                let reply = self.refresh(&token);
                self.send(wire::text(&reply)).await;
                Ok(())
            }
            control @ (ClientMessage::Resume { .. }
            | ClientMessage::Ack { .. }
            | ClientMessage::Msg { .. }) => match &mut self.link {
                Some(link) => {
                    link.on_control(control, self.state, &self.conn.client_id, &self.outbound)
                        .await
                }
                None => {
                    let off = "reliable mode is off on this connection: connect to /ws?reliable=1";
                    self.send(wire::error(ErrorCode::NotReliable, off.into()))
                        .await;
                    Ok(())
                }
            },
            request => {
                let served = app::serve(request, self.state.config.max_burst);
                match &mut self.link {
                    Some(link) => {
                        link.deliver(served, self.state, &self.conn.client_id, &self.outbound)
                            .await
                    }
                    None => {
                        self.deliver(served).await;
                        Ok(())
                    }
                }
            }
        }
    }

    /// Token mode: a valid token of the same user moves the connection's
    /// expiry to its `exp` (`refreshed`); anything else is refused with
    /// `bad_token` and the connection keeps its current expiry. At most one
    /// refresh per `--refresh-interval` is checked (a signature check costs,
    /// RS256 and ES256 most): one sooner gets `rate_limited`, unchecked.
    /// The third refused or rate-limited refresh in a row closes the
    /// connection with 4401 (through its close request, after the reply);
    /// refusals are logged at most once a minute per connection.
    fn refresh(&mut self, token: &str) -> ServerMessage {
        const MAX_BAD_REFRESHES: u8 = 3;
        const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
        let now = tokio::time::Instant::now();
        let interval = self.state.config.refresh_interval;
        let checked = if self
            .last_refresh
            .is_some_and(|at| now < crate::timer::later(at, interval))
        {
            Err((
                ErrorCode::RateLimited,
                format!(
                    "one refresh per {interval:?} at most: the connection keeps its current token"
                ),
            ))
        } else {
            self.last_refresh = Some(now);
            let bad = |message: String| Err((ErrorCode::BadToken, message));
            match (&self.state.auth, &self.conn.user) {
                (Some(verifier), Some(user)) => match verifier.verify(token) {
                    Ok(identity) if *identity.user == **user => {
                        self.expiry = Some(crate::timer::expiry(identity.exp, verifier.leeway()));
                        self.rearm = true;
                        Ok(identity.exp)
                    }
                    Ok(_) => {
                        bad("the token is another user's: the connection keeps its token".into())
                    }
                    Err(refused) => bad(format!(
                        "{}: the connection keeps its current token",
                        refused.reason()
                    )),
                },
                _ => bad("this server has no token auth: there is nothing to refresh".into()),
            }
        };
        let (code, message) = match checked {
            Ok(exp) => {
                self.bad_refreshes = 0;
                return ServerMessage::Refreshed { exp };
            }
            Err(refused) => refused,
        };
        self.bad_refreshes = self.bad_refreshes.saturating_add(1);
        let (logged, unlogged) = &mut self.refusal_logged;
        if logged.is_none_or(|at| now >= crate::timer::later(at, LOG_EVERY)) {
            tracing::info!(
                code = code.as_str(),
                in_a_row = self.bad_refreshes,
                not_logged_since = *unlogged,
                "refused a token refresh: {message}"
            );
            *logged = Some(now);
            *unlogged = 0;
        } else {
            *unlogged = unlogged.saturating_add(1);
        }
        if self.bad_refreshes >= MAX_BAD_REFRESHES {
            self.conn
                .shared
                .request_close(crate::registry::CloseRequest {
                    code: shared::close_code::UNAUTHORIZED,
                    reason: "too many bad refreshes".into(),
                });
        }
        app::error(code, message)
    }

    /// Delivers an answer on a plain connection: a reply as it is, a burst
    /// to the writer, which numbers and batches its pushes.
    async fn deliver(&self, served: Served) {
        match served {
            Served::Reply(reply) => self.send(wire::text(&reply)).await,
            Served::Burst(count) => {
                let _ = self.outbound.send(Outbound::Burst { count }).await;
            }
        }
    }

    /// A timed push; in reliable mode the first one stores the session,
    /// which may end the connection at a session cap.
    async fn timed_push(&mut self) -> Result<(), End> {
        // Only when the queue is empty: a slow client gets no pile of old ticks.
        if self.outbound.capacity() < self.outbound.max_capacity() {
            Metrics::add(&self.state.metrics.pushes_dropped, 1);
            return Ok(());
        }
        if let Some(link) = &mut self.link {
            return link
                .timed_push(&self.outbound, self.state, &self.conn.client_id)
                .await;
        }
        let push = Outbound::Push {
            push: std::sync::Arc::new(shared::PushEncoder::new(millis(SystemTime::now()), "tick")),
        };
        if self.outbound.try_send(push).is_err() {
            Metrics::add(&self.state.metrics.pushes_dropped, 1);
        }
        Ok(())
    }
}
