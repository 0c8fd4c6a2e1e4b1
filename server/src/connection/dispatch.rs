//! The ONE dispatch of client messages, for both modes: a frame is
//! decoded once and each message handled in one `match`; in reliable mode
//! the link to the session binds the connection on its first message and
//! unwraps a `msg`, whose content comes back through the same rules
//! ([`app::serve`]) and is answered numbered.
//!
//! Replies are queued with [`crate::queue::Sender::force_send`]: the connection's
//! own task writes them at the top of its next turn, and reads no more
//! while the queue is over its bounds (see `driver.rs`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use shared::{ClientMessage, ErrorCode, ServerMessage};

use super::End;
use super::app::{self, Served};
use super::channels::is_channel_request;
use super::driver::Connection;
use crate::clock::millis;
use crate::metrics::Metrics;
use crate::registry::Outbound;
use crate::wire;

/// A token's channel claims, if it has any.
type Claims = Option<std::sync::Arc<crate::channels::grants::ChannelClaims>>;

impl<T> Connection<'_, T>
where
    T: Stream<Item = Result<Message, axum::Error>> + Sink<Message> + Unpin,
{
    /// Sends `message` unnumbered, after what waits to be written.
    fn send(&mut self, message: Message) {
        self.reply(message);
    }

    pub(super) async fn on_message(&mut self, message: Message) -> Result<(), End> {
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
            // A plain connection's canonical echo is its own reply, byte
            // for byte: sent back as it came, with no decode, encode or
            // copy (the typed echo's hot path). Reliable mode numbers the
            // reply, so it goes the usual way.
            Message::Text(text) if self.link.is_none() && shared::echo_is_its_own_reply(&text) => {
                self.bad_in_a_row = 0;
                self.send(Message::Text(text));
                Ok(())
            }
            Message::Text(text) => self.on_text(&text).await,
            // Binary frames are echoed as they are, in both modes.
            other => {
                self.send(other);
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
                self.send(wire::error(err.code(), err.to_string()));
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
                self.send(wire::text(&ServerMessage::Pong { t }));
                Ok(())
            }
            // So is a refresh of the connection's token (whose channel
            // claims then apply, after its answer).
            ClientMessage::Refresh { token } => {
                let (reply, claims) = self.refresh(&token);
                self.send(wire::text(&reply));
                if let Some(claims) = claims {
                    self.apply_claims(claims).await;
                }
                Ok(())
            }
            // A reliable `msg`: its content decoded once, here; a channel
            // request is served outside the session's lock (it waits for
            // the streams), then accepted with its answer.
            ClientMessage::Msg { seq, data } if self.link.is_some() => {
                let request = ClientMessage::from_json(&data);
                let (state, client_id) = (self.state, self.conn.client_id.as_str());
                match request {
                    Ok(request) if self.has_channels() && is_channel_request(&request) => {
                        let Some(link) = &mut self.link else {
                            return Ok(());
                        };
                        if !link.peek(seq, state, (client_id, &self.outbound)).await? {
                            return Ok(());
                        }
                        let answer = self.serve_channel(request).await;
                        if let Some(link) = &mut self.link {
                            link.accept_reply(seq, answer.reply, state, &self.outbound)
                                .await?;
                        }
                        self.go_live(answer.live);
                        Ok(())
                    }
                    request => match &mut self.link {
                        Some(link) => {
                            link.on_msg_decoded(
                                (seq, &data),
                                request,
                                state,
                                (client_id, &self.outbound),
                            )
                            .await
                        }
                        None => Ok(()),
                    },
                }
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
                    self.send(wire::error(ErrorCode::NotReliable, off.into()));
                    Ok(())
                }
            },
            // Version 2's channels: answered as any request is (numbered
            // in reliable mode), then a subscription's missed publications
            // and its going live. Version 1 has none (`unknown_type`).
            request if self.has_channels() && is_channel_request(&request) => {
                let answer = self.serve_channel(request).await;
                match &mut self.link {
                    Some(link) => {
                        link.deliver(
                            Served::Reply(answer.reply),
                            self.state,
                            &self.conn.client_id,
                            &self.outbound,
                        )
                        .await?;
                    }
                    None => self.send(wire::text(&answer.reply)),
                }
                self.go_live(answer.live);
                Ok(())
            }
            request => {
                let served = app::serve(request, self.state.config.max_burst);
                match &mut self.link {
                    Some(link) => {
                        link.deliver(served, self.state, &self.conn.client_id, &self.outbound)
                            .await
                    }
                    None => {
                        self.deliver(served);
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
    ///
    /// An accepted token's channel claims come back with the reply, to
    /// replace the connection's once it is sent.
    fn refresh(&mut self, token: &str) -> (ServerMessage, Option<Claims>) {
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
                        Ok((identity.exp, identity.channels))
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
            Ok((exp, claims)) => {
                self.bad_refreshes = 0;
                return (ServerMessage::Refreshed { exp }, Some(claims));
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
                    reason: super::end::TOO_MANY_BAD_REFRESHES.into(),
                });
        }
        (app::error(code, message), None)
    }

    /// Delivers an answer on a plain connection: a reply as it is, a burst
    /// to the pacer (the outbox numbers and writes its pushes as it grants
    /// them), or `burst_busy` when one runs and another waits already.
    pub(super) fn deliver(&mut self, served: Served) {
        match served {
            Served::Reply(reply) => self.send(wire::text(&reply)),
            Served::Burst(count) => {
                if self
                    .pacer
                    .start(count, tokio::time::Instant::now())
                    .is_err()
                {
                    self.send(wire::text(&app::burst_busy()));
                }
            }
        }
    }

    /// A timed push; in reliable mode the first one stores the session,
    /// which may end the connection at a session cap.
    pub(super) async fn timed_push(&mut self) -> Result<(), End> {
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
