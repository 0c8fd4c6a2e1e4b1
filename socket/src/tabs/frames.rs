//! The server frames a leader writes on the tab wire
//! ([`TabMessage::Server`](super::TabMessage::Server)): what its driver
//! said of a channel, in the channel protocol's own format, so that every
//! tab reads it with the decoder its driver carries anyway
//! (`shared::ServerMessage::channel_if_any`). Written by hand, field by
//! field, as `shared`'s writers are: serde's serializer of
//! `ServerMessage` is not in a browser build, and must not come in.

use shared::ErrorCode;
use shared::channel::{Member, RawJson, StreamPosition};
use shared::object::write_string;

use crate::channel::{ChannelError, ChannelEvent, Presence, PresenceStats};

/// A frame being written: `{"type":"<kind>","channel":"<channel>"`.
struct Writer(String);

impl Writer {
    fn new(kind: &str, channel: &str) -> Self {
        let mut out = String::with_capacity(96);
        out.push_str("{\"type\":\"");
        out.push_str(kind);
        out.push_str("\",\"channel\":");
        write_string(&mut out, channel);
        Self(out)
    }

    fn key(&mut self, name: &str) -> &mut String {
        self.0.push_str(",\"");
        self.0.push_str(name);
        self.0.push_str("\":");
        &mut self.0
    }

    fn number(mut self, name: &str, n: u64) -> Self {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(self.key(name), "{n}");
        self
    }

    fn text(mut self, name: &str, text: &str) -> Self {
        write_string(self.key(name), text);
        self
    }

    fn raw(mut self, name: &str, raw: &str) -> Self {
        self.key(name).push_str(raw);
        self
    }

    fn id(self, id: Option<&str>) -> Self {
        match id {
            Some(id) => self.text("id", id),
            None => self,
        }
    }

    /// The frame; `None` never in practice (what is written is JSON), but
    /// a frame that were not would be dropped, not posted.
    fn done(mut self) -> Option<RawJson> {
        self.0.push('}');
        RawJson::parse(&self.0).ok()
    }
}

/// `{"client_id":…,"user":…,"client_name":…}`, absent fields left out.
fn member(out: &mut String, member: &Member) {
    out.push_str("{\"client_id\":");
    write_string(out, &member.client_id);
    for (name, value) in [("user", &member.user), ("client_name", &member.client_name)] {
        if let Some(value) = value {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            write_string(out, value);
        }
    }
    out.push('}');
}

/// The frame that says `event` of `channel` to the tabs; `position`: the
/// leader's epoch and last offset delivered after it (a `subscribed`
/// carries it in place of the stream's). `None` for what is not shared
/// this way (the leader's driver follows no presence itself).
pub(super) fn of_event(
    channel: &str,
    position: Option<&StreamPosition>,
    event: &ChannelEvent,
) -> Option<RawJson> {
    let frame = match event {
        ChannelEvent::Subscribed { recovered } => {
            subscribed(channel, position?).raw("recovered", bool_text(*recovered))
        }
        // The driver's `Reset`: a `subscribed` whose epoch changed.
        ChannelEvent::Reset { .. } => subscribed(channel, position?)
            .raw("recovered", "false")
            .text("reason", "epoch_changed"),
        ChannelEvent::Publication { offset, data, info } => {
            let mut frame = Writer::new("pub", channel)
                .number("offset", *offset)
                .raw("data", data.get());
            if let Some(info) = info {
                let out = frame.key("info");
                out.push_str("{\"client_id\":");
                write_string(out, &info.client_id);
                if let Some(user) = &info.user {
                    out.push_str(",\"user\":");
                    write_string(out, user);
                }
                out.push('}');
            }
            frame
        }
        ChannelEvent::Gap { from, to } => Writer::new("channel_gap", channel)
            .number("from", *from)
            .number("to", *to),
        ChannelEvent::Unsubscribed { reason } => {
            Writer::new("unsubscribed", channel).text("reason", reason.as_str())
        }
        // A refused subscription: an `error` naming the channel, no id.
        ChannelEvent::Error(ChannelError::Refused { code, message }) => {
            error(channel, code, message, None)
        }
        ChannelEvent::Join(who) | ChannelEvent::Leave(who) => {
            let kind = if matches!(event, ChannelEvent::Join(_)) {
                "join"
            } else {
                "leave"
            };
            let mut frame = Writer::new(kind, channel);
            member(frame.key("info"), who);
            frame
        }
        _ => return None,
    };
    frame.done()
}

/// `subscribed` at `position` (the leader's), with no id.
fn subscribed(channel: &str, position: &StreamPosition) -> Writer {
    Writer::new("subscribed", channel)
        .text("epoch", &position.epoch)
        .number("offset", position.offset)
}

/// A `subscribed` for one tab joining a channel already live: at the
/// leader's position, not recovered.
pub(super) fn joined(channel: &str, position: &StreamPosition) -> Option<RawJson> {
    subscribed(channel, position)
        .raw("recovered", "false")
        .done()
}

/// `published` with the publish's id.
pub(super) fn published(channel: &str, id: &str, offset: u64) -> Option<RawJson> {
    Writer::new("published", channel)
        .number("offset", offset)
        .id(Some(id))
        .done()
}

/// A refusal: `error` naming the channel, and the id of what it refuses
/// (none: the subscription).
pub(super) fn refusal(
    channel: &str,
    code: &ErrorCode,
    message: &str,
    id: Option<&str>,
) -> Option<RawJson> {
    error(channel, code, message, id).done()
}

fn error(channel: &str, code: &ErrorCode, message: &str, id: Option<&str>) -> Writer {
    Writer::new("error", channel)
        .text("code", code.as_str())
        .text("message", message)
        .id(id)
}

/// A `presence` answer to query `id`.
pub(super) fn presence(channel: &str, id: &str, presence: &Presence) -> Option<RawJson> {
    let mut frame = Writer::new("presence", channel);
    let out = frame.key("clients");
    out.push('[');
    for (i, who) in presence.members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        member(out, who);
    }
    out.push(']');
    if presence.truncated {
        frame = frame.raw("truncated", "true");
    }
    frame.id(Some(id)).done()
}

/// A `presence_stats` answer to query `id`.
pub(super) fn presence_stats(channel: &str, id: &str, stats: PresenceStats) -> Option<RawJson> {
    Writer::new("presence_stats", channel)
        .number("clients", stats.clients)
        .number("users", stats.users)
        .id(Some(id))
        .done()
}

fn bool_text(flag: bool) -> &'static str {
    if flag { "true" } else { "false" }
}
