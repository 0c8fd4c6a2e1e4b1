//! The channel panel's lines: what a subscription's events and a publish's
//! answer look like in its feed (pure, tested natively).
//!
//! The feed is a [`Line`] list like the log, so that the panel reuses the
//! log's component and styles; its kinds are the channel ones of [`Kind`].
//! The member set is not a line: [`super::Console::members`] follows it.
//! Texts are written out, never `{:?}`: Debug formatting is code the
//! console's wasm does without (its size budget).

use buffered_socket::{ChannelEvent, Member, PublishError};

use super::{Kind, Line};

impl Line {
    /// The feed's line for `event`, one of the subscription's events;
    /// `None` for a presence answer (the member list shows it).
    pub fn channel(at_ms: f64, event: &ChannelEvent) -> Option<Self> {
        let (kind, text) = match event {
            ChannelEvent::Subscribed { recovered: true } => (
                Kind::Subscribed,
                "subscribed again, recovered: what was missed follows".to_owned(),
            ),
            ChannelEvent::Subscribed { recovered: false } => {
                (Kind::Subscribed, "subscribed".to_owned())
            }
            ChannelEvent::Publication { offset, data, info } => {
                let from = match info {
                    Some(info) => match &info.user {
                        Some(user) => format!(" from {} ({user})", info.client_id),
                        None => format!(" from {}", info.client_id),
                    },
                    None => String::new(),
                };
                (Kind::Publication, format!("#{offset} {}{from}", data.get()))
            }
            ChannelEvent::Gap { from, to } => (
                Kind::Gap,
                format!("offsets {from} to {to} were lost: the history no longer had them"),
            ),
            ChannelEvent::Reset { .. } => (
                Kind::Reset,
                "the channel started over under a new epoch: offsets start again".to_owned(),
            ),
            ChannelEvent::Unsubscribed { reason } => (
                Kind::Unsubscribed,
                format!("the server ended the subscription ({})", reason.as_str()),
            ),
            ChannelEvent::Join(member) => (Kind::Join, member_text(member)),
            ChannelEvent::Leave(member) => (Kind::Leave, member_text(member)),
            ChannelEvent::Presence(_) => return None,
            ChannelEvent::Error(err) => (Kind::Error, err.to_string()),
            // `ChannelEvent` is non-exhaustive: a newer wrapper's event.
            _ => (
                Kind::Error,
                "an event this console does not show".to_owned(),
            ),
        };
        Some(Self { at_ms, kind, text })
    }

    /// The feed's line for a publish's answer: its offset, or why not.
    pub fn published(at_ms: f64, channel: &str, answer: Result<u64, PublishError>) -> Self {
        let (kind, text) = match answer {
            Ok(offset) => (
                Kind::Response,
                format!("published to {channel} at offset {offset}"),
            ),
            Err(err) => (Kind::Error, format!("not published to {channel}: {err}")),
        };
        Self { at_ms, kind, text }
    }
}

/// A member as the feed and the member list show it: its client id, and
/// its user and token name when it has them.
pub fn member_text(member: &Member) -> String {
    let mut text = member.client_id.clone();
    for extra in [&member.user, &member.client_name].into_iter().flatten() {
        text.push_str(" · ");
        text.push_str(extra);
    }
    text
}

#[cfg(test)]
mod tests {
    use buffered_socket::{
        ChannelError, Presence, PublisherInfo, RawJson, RecoveryFailure, UnsubscribeReason,
    };
    use shared::ErrorCode;

    use super::*;

    fn shown(event: &ChannelEvent) -> (Kind, String) {
        let line = Line::channel(5.0, event).expect("a line");
        assert_eq!(line.at_ms, 5.0);
        (line.kind, line.text)
    }

    #[test]
    fn a_publication_shows_its_offset_its_data_and_its_publisher() {
        let publication = |info| ChannelEvent::Publication {
            offset: 42,
            data: RawJson::parse(r#"{"text":"hi"}"#).unwrap(),
            info,
        };
        assert_eq!(
            shown(&publication(Some(PublisherInfo {
                client_id: "c7".into(),
                user: None,
            }))),
            (Kind::Publication, r#"#42 {"text":"hi"} from c7"#.into())
        );
        assert_eq!(
            shown(&publication(Some(PublisherInfo {
                client_id: "c7".into(),
                user: Some("alice".into()),
            }))),
            (
                Kind::Publication,
                r#"#42 {"text":"hi"} from c7 (alice)"#.into()
            )
        );
        // The admin API published it: no publisher.
        assert_eq!(
            shown(&publication(None)),
            (Kind::Publication, r#"#42 {"text":"hi"}"#.into())
        );
    }

    #[test]
    fn markers_say_what_was_lost_or_recovered() {
        assert_eq!(
            shown(&ChannelEvent::Subscribed { recovered: false }),
            (Kind::Subscribed, "subscribed".into())
        );
        assert_eq!(
            shown(&ChannelEvent::Subscribed { recovered: true }).1,
            "subscribed again, recovered: what was missed follows"
        );
        assert_eq!(
            shown(&ChannelEvent::Gap { from: 3, to: 9 }),
            (
                Kind::Gap,
                "offsets 3 to 9 were lost: the history no longer had them".into()
            )
        );
        assert_eq!(
            shown(&ChannelEvent::Reset {
                reason: RecoveryFailure::EpochChanged
            })
            .0,
            Kind::Reset
        );
        assert_eq!(
            shown(&ChannelEvent::Unsubscribed {
                reason: UnsubscribeReason::Admin
            }),
            (
                Kind::Unsubscribed,
                "the server ended the subscription (admin)".into()
            )
        );
        let refused = ChannelError::Refused {
            code: ErrorCode::PermissionDenied,
            message: "no".into(),
        };
        let (kind, text) = shown(&ChannelEvent::Error(refused.clone()));
        assert_eq!((kind, text), (Kind::Error, refused.to_string()));
    }

    #[test]
    fn joins_and_leaves_name_the_member_and_an_answer_is_no_line() {
        let alice = Member {
            client_id: "c1".into(),
            user: Some("alice".into()),
            client_name: Some("laptop".into()),
        };
        assert_eq!(
            shown(&ChannelEvent::Join(alice.clone())),
            (Kind::Join, "c1 · alice · laptop".into())
        );
        let anonymous = Member {
            client_id: "c2".into(),
            user: None,
            client_name: None,
        };
        assert_eq!(
            shown(&ChannelEvent::Leave(anonymous)),
            (Kind::Leave, "c2".into())
        );
        assert_eq!(
            Line::channel(1.0, &ChannelEvent::Presence(Presence::default())),
            None
        );
    }

    #[test]
    fn a_publish_answer_shows_the_offset_or_the_error() {
        let ok = Line::published(1.0, "chat:lobby", Ok(7));
        assert_eq!(
            (ok.kind, ok.text.as_str()),
            (Kind::Response, "published to chat:lobby at offset 7")
        );
        let refused = Line::published(1.0, "chat:lobby", Err(PublishError::QueueFull));
        assert_eq!(
            (refused.kind, refused.text.as_str()),
            (
                Kind::Error,
                "not published to chat:lobby: the send queue is full"
            )
        );
    }
}
