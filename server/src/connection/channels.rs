//! A connection's channels (protocol version 2): `subscribe`,
//! `unsubscribe` and `publish` answered, the token's `subs` subscribed at
//! connect, and a refreshed token's grants applied.
//!
//! A request is served here into a [`ChannelAnswer`]: its reply (delivered
//! by the dispatch as any reply is: numbered in reliable mode), then for a
//! subscription what it missed and its going live ([`Live`]), after the
//! reply. `pub` frames are never numbered: recovery by offset covers them.
//!
//! A subscriber's live publications reach its socket through its
//! outbound queue, which the hub holds as the connection's sink: written
//! into the socket at once when the connection is idle (see
//! `serve::link`), else queued within the queue's bounds. A connection that cannot take one
//! is closed as a slow consumer (1013) rather than given a hole: its
//! client comes back and recovers by offset, with nothing lost.

use std::sync::Arc;

use axum::extract::ws::Message;
use shared::channel::{MAX_ID_BYTES, Member, OffsetRange, RecoveryFailure, UnsubscribeReason};
use shared::{ClientMessage, ServerMessage};

use super::driver::Connection;
use crate::channels::grants::{self, ChannelClaims, Who};
use crate::channels::hub::{Presence, Sink};
use crate::channels::namespace::Capability;
use crate::channels::service::{Refusal, Subscribed, pub_frame};
use crate::channels::stream::{Position, PublishRequest, PublisherInfo, Recovery};
use crate::limits::Bucket;
use crate::queue;
use crate::registry::Outbound;

/// A connection's channel state, made at its first channel request (an
/// idle connection that uses none pays one pointer).
pub(super) struct ChannelState {
    /// The connection's queue, as its channels' sink.
    sink: Arc<queue::Shared>,
    /// `--publish-rate`.
    publishes: Option<Bucket>,
    /// `--channel-request-rate`.
    requests: Option<Bucket>,
}

/// Takes a token of `bucket` (made full at first use), `rate` a second
/// and `burst` at most; `limited` is the refusal when it has none.
fn take_token(
    bucket: &mut Option<Bucket>,
    (rate, burst): (f64, f64),
    limited: impl FnOnce(f64) -> Refusal,
) -> Result<(), Refusal> {
    if rate <= 0.0 {
        return Ok(());
    }
    let now = std::time::Instant::now();
    bucket
        .get_or_insert_with(|| Bucket::full(burst, now))
        .take(now, rate, burst)
        .map_err(|_| limited(rate))
}

/// The answer to one channel request.
pub(super) struct ChannelAnswer {
    /// The reply: `subscribed`, `unsubscribed`, `published`, `presence`,
    /// `presence_stats` or `error`.
    pub(super) reply: ServerMessage,
    /// Numbered in reliable mode: all but presence's answers, which are
    /// the connection's (a fresh one is asked for after a reconnect).
    pub(super) numbered: bool,
    /// A new subscription: what follows its reply.
    pub(super) live: Option<Live>,
}

/// What follows a new subscription's `subscribed`.
pub(super) struct Live {
    channel: String,
    /// The publications it missed, in order.
    missed: Vec<Message>,
    /// Where the subscriber is once they are sent.
    at: Position,
}

/// Whether `request` is a channel request.
pub(super) fn is_channel_request(request: &ClientMessage) -> bool {
    matches!(
        request,
        ClientMessage::Subscribe { .. }
            | ClientMessage::Unsubscribe { .. }
            | ClientMessage::Publish { .. }
            | ClientMessage::Presence { .. }
            | ClientMessage::PresenceStats { .. }
    )
}

fn refused(channel: String, id: Option<String>, refusal: &Refusal) -> ChannelAnswer {
    ChannelAnswer {
        reply: ServerMessage::Error {
            code: refusal.code(),
            message: refusal.to_string(),
            channel: Some(channel),
            id,
        },
        live: None,
        numbered: true,
    }
}

/// The refusal of an `id` past [`MAX_ID_BYTES`] (not echoed).
fn bad_id(channel: &str, id: Option<&str>) -> Option<ChannelAnswer> {
    id.is_some_and(|id| id.len() > MAX_ID_BYTES)
        .then(|| refused(channel.to_owned(), None, &Refusal::BadId))
}

/// The `subscribed` of a new subscription, and what follows it.
fn subscribed(channel: String, id: Option<String>, subscribed: Subscribed) -> ChannelAnswer {
    let (position, recovery) = match subscribed {
        Subscribed::Already(position) => {
            let reply = ServerMessage::Subscribed {
                channel,
                epoch: position.epoch,
                offset: position.offset,
                recovered: None,
                reason: None,
                gap: None,
                id,
            };
            return ChannelAnswer {
                reply,
                live: None,
                numbered: true,
            };
        }
        Subscribed::New { position, recovery } => (position, recovery),
    };
    let (recovered, reason, gap, missed) = match recovery {
        Recovery::Fresh => (None, None, None, Vec::new()),
        Recovery::Recovered(missed) => (Some(true), None, None, missed),
        Recovery::Trimmed {
            gap: (from, to),
            publications,
        } => (
            Some(false),
            Some(RecoveryFailure::HistoryTrimmed),
            Some(OffsetRange { from, to }),
            publications,
        ),
        Recovery::EpochChanged => (
            Some(false),
            Some(RecoveryFailure::EpochChanged),
            None,
            Vec::new(),
        ),
    };
    let missed = missed
        .iter()
        .map(|p| Message::Text(pub_frame(&channel, p).into()))
        .collect();
    let reply = ServerMessage::Subscribed {
        channel: channel.clone(),
        epoch: position.epoch.clone(),
        offset: position.offset,
        recovered,
        reason,
        gap,
        id,
    };
    ChannelAnswer {
        reply,
        live: Some(Live {
            channel,
            missed,
            at: position,
        }),
        numbered: true,
    }
}

impl<T> Connection<'_, T>
where
    T: futures_util::Stream<Item = Result<Message, axum::Error>>
        + futures_util::Sink<Message>
        + Unpin,
{
    /// Whether the connection speaks version 2, which has channels.
    pub(super) fn has_channels(&self) -> bool {
        self.conn.protocol.number() >= 2
    }

    fn channel_state(&mut self) -> &mut ChannelState {
        let (outbound, shared) = (&self.outbound, &self.conn.shared);
        self.channels.get_or_insert_with(|| {
            Box::new(ChannelState {
                sink: outbound.channel_sink(shared),
                publishes: None,
                requests: None,
            })
        })
    }

    fn who(&self) -> Who<'_> {
        match &self.conn.user {
            None => Who::Anonymous,
            Some(_) => Who::User(self.claims.as_deref().and_then(|c| c.grants.as_ref())),
        }
    }

    /// Serves one channel request (see [`is_channel_request`]).
    pub(super) async fn serve_channel(&mut self, request: ClientMessage) -> ChannelAnswer {
        self.serve_channel_keyed(request, None).await
    }

    /// [`Self::serve_channel`]; a `publish` without an `id` is deduplicated
    /// by `key` instead (not echoed: the client gave no id).
    pub(super) async fn serve_channel_keyed(
        &mut self,
        request: ClientMessage,
        key: Option<String>,
    ) -> ChannelAnswer {
        let answer = |reply| ChannelAnswer {
            reply,
            live: None,
            numbered: true,
        };
        match request {
            ClientMessage::Subscribe { channel, since, id } => {
                if let Some(bad) = bad_id(&channel, id.as_deref()) {
                    return bad;
                }
                if let Err(refusal) = self.take_request() {
                    return refused(channel, id, &refusal);
                }
                let since = since.map(|s| Position {
                    epoch: s.epoch,
                    offset: s.offset,
                });
                match self.subscribe(&channel, since.as_ref(), true).await {
                    Ok(done) => subscribed(channel, id, done),
                    Err(refusal) => refused(channel, id, &refusal),
                }
            }
            ClientMessage::Unsubscribe { channel, id } => {
                if let Some(bad) = bad_id(&channel, id.as_deref()) {
                    return bad;
                }
                match self.unsubscribe(&channel).await {
                    Ok(()) => answer(ServerMessage::Unsubscribed {
                        channel,
                        reason: UnsubscribeReason::Client,
                        id,
                    }),
                    Err(refusal) => refused(channel, id, &refusal),
                }
            }
            ClientMessage::Publish { channel, data, id } => {
                if let Some(bad) = bad_id(&channel, id.as_deref()) {
                    return bad;
                }
                let dedup = id.clone().or(key);
                match self.publish(&channel, data.get(), dedup).await {
                    Ok(offset) => answer(ServerMessage::Published {
                        channel,
                        offset,
                        id,
                    }),
                    Err(refusal) => refused(channel, id, &refusal),
                }
            }
            ClientMessage::Presence { channel, id } => self.presence(channel, id, false).await,
            ClientMessage::PresenceStats { channel, id } => self.presence(channel, id, true).await,
            _ => answer(super::app::unknown_type()),
        }
    }

    /// A `presence` or (`stats`) `presence_stats` answer, never numbered.
    async fn presence(
        &mut self,
        channel: String,
        id: Option<String>,
        stats: bool,
    ) -> ChannelAnswer {
        if let Some(bad) = bad_id(&channel, id.as_deref()) {
            return bad;
        }
        let found = match self.state.channels.namespace(&channel) {
            Err(err) => Err(Refusal::from(err)),
            Ok(_) if let Err(limited) = self.take_request() => Err(limited),
            Ok(namespace)
                if !grants::allows(self.who(), namespace, &channel, Capability::Presence) =>
            {
                Err(Refusal::PermissionDenied("see presence"))
            }
            Ok(_) => {
                let limit = if stats {
                    0
                } else {
                    self.state.config.max_presence_answer
                };
                self.state.channels.presence(&channel, limit).await
            }
        };
        let reply = match found {
            Ok(found) if stats => ServerMessage::PresenceStats {
                channel,
                clients: found.clients,
                users: found.users,
                id,
            },
            Ok(found) => ServerMessage::Presence {
                channel,
                truncated: (found.clients > found.members.len() as u64).then_some(true),
                clients: found.members,
                id,
            },
            Err(refusal) => return refused(channel, id, &refusal),
        };
        ChannelAnswer {
            reply,
            live: None,
            numbered: false,
        }
    }

    /// This connection as a member of `channel`'s presence, if its
    /// namespace keeps presence.
    fn member_of(&self, channel: &str) -> Option<Presence> {
        let namespace = self.state.channels.namespace(channel).ok()?;
        namespace.presence.then(|| Presence {
            member: Arc::new(Member {
                client_id: self.conn.client_id.clone(),
                user: self.conn.user.as_deref().map(str::to_owned),
                client_name: self.conn.client_name.as_deref().map(str::to_owned),
            }),
            notices: namespace.join_leave
                && grants::allows(self.who(), namespace, channel, Capability::Presence),
        })
    }

    /// Subscribes the connection to `channel`; `checked` asks for the
    /// capability (a token's `subs` are the server's own decision).
    async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<&Position>,
        checked: bool,
    ) -> Result<Subscribed, Refusal> {
        let channels = &self.state.channels;
        let namespace = channels.namespace(channel)?;
        if checked && !grants::allows(self.who(), namespace, channel, Capability::Subscribe) {
            return Err(Refusal::PermissionDenied("subscribe"));
        }
        let conn = self.conn.number;
        let max = self.state.config.max_subscriptions;
        let hub = channels.hub();
        if max > 0
            && hub.count_of(conn) >= max
            && !hub.channels_of(conn).iter().any(|c| **c == *channel)
        {
            return Err(Refusal::TooManySubscriptions(max));
        }
        let member = self.member_of(channel);
        let sink: Arc<dyn Sink<Message>> = self.channel_state().sink.clone();
        self.state
            .channels
            .subscribe(channel, conn, (sink, member), since)
            .await
    }

    /// A client's `subscribe`, `presence` or `presence_stats` takes a token
    /// of `--channel-request-rate` (see its doc for the bucket's size).
    fn take_request(&mut self) -> Result<(), Refusal> {
        let config = &self.state.config;
        let rate = config.channel_request_rate;
        let burst = rate.max(1.0).max(2.0 * config.max_subscriptions as f64);
        take_token(
            &mut self.channel_state().requests,
            (rate, burst),
            Refusal::RequestsLimited,
        )
    }

    async fn unsubscribe(&mut self, channel: &str) -> Result<(), Refusal> {
        crate::channels::namespace::namespace_of(channel)?;
        self.state
            .channels
            .unsubscribe(channel, self.conn.number)
            .await;
        Ok(())
    }

    async fn publish(
        &mut self,
        channel: &str,
        data: &str,
        id: Option<String>,
    ) -> Result<u64, Refusal> {
        let channels = &self.state.channels;
        let namespace = channels.namespace(channel)?;
        if !grants::allows(self.who(), namespace, channel, Capability::Publish) {
            return Err(Refusal::PermissionDenied("publish"));
        }
        let max = namespace.max_publication_bytes;
        if data.len() > max {
            return Err(Refusal::TooLarge {
                size: data.len(),
                max,
            });
        }
        let rate = self.state.config.publish_rate;
        take_token(
            &mut self.channel_state().publishes,
            (rate, rate.max(1.0)),
            Refusal::RateLimited,
        )?;
        let request = PublishRequest {
            channel: channel.to_owned(),
            data: data.to_owned(),
            id,
            info: Some(PublisherInfo {
                client_id: self.conn.client_id.clone(),
                user: self.conn.user.as_deref().map(str::to_owned),
            }),
        };
        Ok(self.state.channels.publish(request).await?.offset)
    }

    /// What follows a reply: a new subscription's missed publications, in
    /// order, then it goes live.
    pub(super) fn go_live(&mut self, live: Option<Live>) {
        let Some(Live {
            channel,
            missed,
            at,
        }) = live
        else {
            return;
        };
        for frame in missed {
            self.outbound.force_send(Outbound::Frame(frame));
        }
        let live = self
            .state
            .channels
            .go_live(&channel, self.conn.number, (&at.epoch, at.offset));
        if !live {
            // Ended by the admin API while it recovered: its `unsubscribed`
            // went before this `subscribed`, so it is said again after it.
            let ended = ServerMessage::Unsubscribed {
                channel,
                reason: UnsubscribeReason::Admin,
                id: None,
            };
            self.outbound
                .force_send(Outbound::Frame(crate::wire::text(&ended)));
        }
    }

    /// Subscribes the channels of the token's `subs` not subscribed yet,
    /// each answered by an unnumbered `subscribed` (or `error`): the
    /// server's subscriptions belong to the connection, as a client's do.
    pub(super) async fn subscribe_claimed(&mut self) {
        let Some(claims) = self.claims.clone() else {
            return;
        };
        if !self.has_channels() {
            return;
        }
        for channel in &claims.subs {
            let answer = match self.subscribe(channel, None, false).await {
                Ok(Subscribed::Already(_)) => continue,
                Ok(done) => subscribed(channel.clone(), None, done),
                Err(refusal) => refused(channel.clone(), None, &refusal),
            };
            self.outbound
                .force_send(Outbound::Frame(crate::wire::text(&answer.reply)));
            self.go_live(answer.live);
        }
    }

    /// A refreshed token's claims replace the connection's: subscriptions
    /// they no longer allow end (`unsubscribed`, `reason: permission`),
    /// and channels added to `subs` are subscribed.
    pub(super) async fn apply_claims(&mut self, claims: Option<Arc<ChannelClaims>>) {
        self.claims = claims;
        let conn = self.conn.number;
        let subs: Vec<String> = self
            .claims
            .as_ref()
            .map(|c| c.subs.clone())
            .unwrap_or_default();
        for channel in self.state.channels.hub().channels_of(conn) {
            let allowed = subs.iter().any(|s| **s == *channel)
                || self.state.channels.namespace(&channel).is_ok_and(|ns| {
                    grants::allows(self.who(), ns, &channel, Capability::Subscribe)
                });
            if allowed {
                let notices = self.member_of(&channel).is_some_and(|p| p.notices);
                self.state
                    .channels
                    .hub()
                    .set_notices(&channel, conn, notices);
            }
            if !allowed && self.state.channels.unsubscribe(&channel, conn).await {
                let ended = ServerMessage::Unsubscribed {
                    channel: channel.to_string(),
                    reason: UnsubscribeReason::Permission,
                    id: None,
                };
                self.outbound
                    .force_send(Outbound::Frame(crate::wire::text(&ended)));
            }
        }
        self.subscribe_claimed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_one_frame_did_not_fit_no_later_one_gets_in() {
        // A queue of 100 bytes holding 60 of them already.
        let (outbound, _receiver) = queue::channel(16, 100, Arc::default());
        let text = |n: usize| Message::Text("x".repeat(n).into());
        outbound.force_send(Outbound::Frame(text(60)));
        let shared = Arc::new(crate::registry::ClientShared::new(outbound.waker()));
        let sink = outbound.channel_sink(&shared);
        assert!(!sink.send(&text(50)), "over the byte bound");
        assert!(shared.close_pending(), "the connection is asked to close");
        // A smaller one would fit: it must not, or the client would
        // recover from past the one dropped.
        assert!(!sink.send(&text(10)));
        sink.send_own(&text(10));
        assert_eq!(outbound.len(), 1, "only what was there before");
    }
}
