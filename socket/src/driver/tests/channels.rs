//! Driver rules: channels (`driver/channels.rs`): the subscription table,
//! resubscribing with `since`, each offset once and in order or a gap, and
//! publishes pending by id.

use shared::ErrorCode;
use shared::channel::{OffsetRange, RawJson, RecoveryFailure, StreamPosition, UnsubscribeReason};

use super::*;
use crate::channel::{ChannelError, ChannelEvent, PublishError, SubscribeError};

pub(super) const CH: &str = "chat:lobby";

type Answers = std::sync::Arc<std::sync::Mutex<Vec<(u64, Result<u64, PublishError>)>>>;

/// Publishes `n` with id `id`; its outcome goes to `answers`, tagged `n`.
fn publish(h: &mut Harness, answers: &Answers, n: u64, id: u128) -> Result<u64, PublishError> {
    let sink = answers.clone();
    let answer = Box::new(move |result| sink.lock().unwrap().push((n, result)));
    h.d.publish(CH, data(n), id, answer)
}

fn answered(answers: &Answers) -> Vec<(u64, Result<u64, PublishError>)> {
    answers.lock().unwrap().clone()
}

/// The channel events among `effects`, with their channel.
fn chan(effects: &[Effect]) -> Vec<(String, ChannelEvent)> {
    events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::Channel(n) => Some((n.channel().to_owned(), n.event().clone())),
            _ => None,
        })
        .collect()
}

/// `CH`'s events only.
pub(super) fn on(effects: &[Effect]) -> Vec<ChannelEvent> {
    chan(effects)
        .into_iter()
        .filter(|(c, _)| c == CH)
        .map(|(_, e)| e)
        .collect()
}

fn data(n: u64) -> RawJson {
    RawJson::parse(&format!("{{\"n\":{n}}}")).unwrap()
}

fn publication(offset: u64) -> ChannelEvent {
    ChannelEvent::Publication {
        offset,
        data: data(offset),
        info: None,
    }
}

fn gap(from: u64, to: u64) -> ChannelEvent {
    ChannelEvent::Gap { from, to }
}

pub(super) fn subscribed_ev(recovered: bool) -> ChannelEvent {
    ChannelEvent::Subscribed { recovered }
}

fn pub_msg(offset: u64) -> ServerMessage {
    ServerMessage::Pub {
        channel: CH.into(),
        offset,
        data: data(offset),
        info: None,
    }
}

/// A `subscribed` answering attempt `id` (or the server's own, without).
pub(super) fn subscribed(epoch: &str, offset: u64, id: Option<&str>) -> ServerMessage {
    ServerMessage::Subscribed {
        channel: CH.into(),
        epoch: epoch.into(),
        offset,
        recovered: None,
        reason: None,
        gap: None,
        id: id.map(Into::into),
    }
}

fn recovered(epoch: &str, offset: u64, id: &str) -> ServerMessage {
    ServerMessage::Subscribed {
        channel: CH.into(),
        epoch: epoch.into(),
        offset,
        recovered: Some(true),
        reason: None,
        gap: None,
        id: Some(id.into()),
    }
}

fn subscribe_frame(since: Option<(&str, u64)>, id: &str) -> ClientMessage {
    ClientMessage::Subscribe {
        channel: CH.into(),
        since: since.map(|(epoch, offset)| StreamPosition {
            epoch: epoch.into(),
            offset,
        }),
        id: Some(id.into()),
    }
}

/// Open, subscribed to `CH` in epoch `e1` from offset 2.
pub(super) fn live() -> Harness {
    let mut h = Harness::new(config()).open();
    h.effects();
    h.d.subscribe(CH, None).unwrap();
    h.effects();
    h.receive_server(&subscribed("e1", 2, Some("s1.1")));
    h
}

/// Cuts the connection and opens the next one.
pub(super) fn reconnect(h: &mut Harness) -> Vec<Effect> {
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    h.opened()
}

#[test]
fn a_subscribe_waits_for_the_connection_and_goes_out_when_it_is_ready() {
    let mut h = Harness::new(config());
    h.start();
    assert_eq!(h.d.subscribe(CH, None), Ok(1));
    assert!(
        writes(&h.effects()).is_empty(),
        "not open: nothing written, nothing queued"
    );
    assert_eq!(h.d.queue_len(), 0);
    let effects = h.opened();
    assert_eq!(client(&writes(&effects)), [subscribe_frame(None, "s1.1")]);
    let effects = h.receive_server(&subscribed("e1", 2, Some("s1.1")));
    assert_eq!(on(&effects), [subscribed_ev(false)]);
    assert_eq!(
        h.d.channel_position(CH, 1),
        Some(StreamPosition {
            epoch: "e1".into(),
            offset: 2
        })
    );
}

#[test]
fn a_kept_position_is_the_first_subscribe_s_since() {
    let mut h = Harness::new(config()).open();
    h.effects();
    let since = StreamPosition {
        epoch: "e1".into(),
        offset: 40,
    };
    h.d.subscribe(CH, Some(since)).unwrap();
    assert_eq!(
        client(&writes(&h.effects())),
        [subscribe_frame(Some(("e1", 40)), "s1.1")]
    );
    let mut seen = on(&h.receive_server(&recovered("e1", 42, "s1.1")));
    for offset in [40, 41, 42] {
        seen.extend(on(&h.receive_server(&pub_msg(offset))));
    }
    assert_eq!(
        seen,
        [subscribed_ev(true), publication(41), publication(42)]
    );
}

#[test]
fn names_are_checked_and_one_subscription_per_channel() {
    let mut h = Harness::new(config()).open();
    assert_eq!(
        h.d.subscribe("a b", None),
        Err(SubscribeError::BadChannel("a b".into()))
    );
    assert_eq!(h.d.subscribe(CH, None), Ok(1));
    assert_eq!(
        h.d.subscribe(CH, None),
        Err(SubscribeError::AlreadySubscribed(CH.into()))
    );
    assert_eq!(
        h.d.publish("", data(1), 1, Box::new(drop)),
        Err(PublishError::BadChannel(String::new()))
    );
}

#[test]
fn each_offset_is_delivered_once_in_order_and_a_hole_is_a_gap() {
    let mut h = live();
    let mut seen = Vec::new();
    for offset in [3, 4, 4, 2, 7, 6, 8] {
        seen.extend(on(&h.receive_server(&pub_msg(offset))));
    }
    assert_eq!(
        seen,
        [
            publication(3),
            publication(4),
            gap(5, 6),
            publication(7),
            publication(8)
        ]
    );
}

#[test]
fn channel_messages_are_not_delivered_as_messages_but_others_are() {
    let mut h = live();
    let effects = h.receive_server(&pub_msg(3));
    assert!(
        !events(&effects)
            .iter()
            .any(|e| matches!(e, Event::Message(_)))
    );
    let effects = h.receive(text(r#"{"type":"pong","t":1}"#));
    assert_eq!(
        events(&effects),
        [Event::Message(text(r#"{"type":"pong","t":1}"#))]
    );
    // An error about something else is the application's.
    let error = ServerMessage::Error {
        code: ErrorCode::Malformed,
        message: "x".into(),
        channel: None,
        id: None,
    };
    let effects = h.receive_server(&error);
    assert!(matches!(events(&effects)[..], [Event::Message(_)]));
}

#[test]
fn without_a_table_channel_texts_reach_the_application_as_before() {
    let mut h = Harness::new(config()).open();
    h.effects();
    let effects = h.receive_server(&pub_msg(3));
    assert!(matches!(events(&effects)[..], [Event::Message(_)]));
}

#[test]
fn after_a_reconnect_it_resubscribes_from_the_last_offset_and_drops_replays() {
    let mut h = live();
    h.receive_server(&pub_msg(3));
    h.receive_server(&pub_msg(4));
    let effects = reconnect(&mut h);
    assert_eq!(
        client(&writes(&effects)),
        [subscribe_frame(Some(("e1", 4)), "s1.2")]
    );
    let mut seen = on(&h.receive_server(&recovered("e1", 6, "s1.2")));
    for offset in [4, 5, 6, 7] {
        seen.extend(on(&h.receive_server(&pub_msg(offset))));
    }
    assert_eq!(
        seen,
        [
            subscribed_ev(true),
            publication(5),
            publication(6),
            publication(7)
        ]
    );
}

#[test]
fn a_trimmed_history_is_a_gap_of_what_was_not_delivered_then_what_it_kept() {
    let mut h = live();
    h.receive_server(&pub_msg(3));
    reconnect(&mut h);
    let answer = ServerMessage::Subscribed {
        channel: CH.into(),
        epoch: "e1".into(),
        offset: 20,
        recovered: Some(false),
        reason: Some(RecoveryFailure::HistoryTrimmed),
        gap: Some(OffsetRange { from: 1, to: 9 }),
        id: Some("s1.2".into()),
    };
    let mut seen = on(&h.receive_server(&answer));
    seen.extend(on(&h.receive_server(&pub_msg(10))));
    assert_eq!(seen, [subscribed_ev(false), gap(4, 9), publication(10)]);
}

#[test]
fn an_answer_that_did_not_recover_is_a_gap_up_to_its_offset() {
    let mut h = live();
    reconnect(&mut h);
    let effects = h.receive_server(&subscribed("e1", 5, Some("s1.2")));
    assert_eq!(on(&effects), [subscribed_ev(false), gap(3, 5)]);
    assert_eq!(on(&h.receive_server(&pub_msg(6))), [publication(6)]);
}

#[test]
fn a_new_epoch_is_a_reset_and_offsets_start_over() {
    let mut h = live();
    h.receive_server(&pub_msg(3));
    reconnect(&mut h);
    let answer = ServerMessage::Subscribed {
        channel: CH.into(),
        epoch: "e2".into(),
        offset: 1,
        recovered: Some(false),
        reason: Some(RecoveryFailure::EpochChanged),
        gap: None,
        id: Some("s1.2".into()),
    };
    let mut seen = on(&h.receive_server(&answer));
    seen.extend(on(&h.receive_server(&pub_msg(2))));
    let reset = ChannelEvent::Reset {
        reason: RecoveryFailure::EpochChanged,
    };
    assert_eq!(seen, [subscribed_ev(false), reset.clone(), publication(2)]);
    // The server's own notice under a live subscription: a reset only.
    let effects = h.receive_server(&subscribed("e3", 0, None));
    assert_eq!(on(&effects), [reset]);
    assert_eq!(on(&h.receive_server(&pub_msg(1))), [publication(1)]);
}

/// The server's `channel_gap` of `from..=to` on [`CH`].
fn channel_gap(from: u64, to: u64) -> ServerMessage {
    ServerMessage::ChannelGap {
        channel: CH.into(),
        from,
        to,
    }
}

#[test]
fn channel_gaps_are_reported_without_what_was_delivered() {
    let mut h = live();
    h.receive_server(&pub_msg(3));
    assert_eq!(on(&h.receive_server(&channel_gap(2, 5))), [gap(4, 5)]);
    assert_eq!(on(&h.receive_server(&channel_gap(1, 5))), []);
    assert_eq!(on(&h.receive_server(&pub_msg(6))), [publication(6)]);
}

#[test]
fn nothing_is_reported_past_the_last_offset_there_can_be() {
    let mut h = live();
    h.receive_server(&pub_msg(3));
    assert_eq!(
        on(&h.receive_server(&pub_msg(u64::MAX))),
        [gap(4, u64::MAX - 1), publication(u64::MAX)]
    );
    assert_eq!(on(&h.receive_server(&channel_gap(u64::MAX, u64::MAX))), []);
    assert_eq!(on(&h.receive_server(&channel_gap(1, u64::MAX))), []);
    assert_eq!(on(&h.receive_server(&pub_msg(u64::MAX))), []);
}

#[test]
fn only_the_latest_attempt_counts_and_a_jump_waits_for_its_recovery() {
    let mut h = live();
    h.receive_server(&pub_msg(3));
    reconnect(&mut h);
    // A stale answer (an older attempt resent by a session, say) changes nothing.
    assert_eq!(
        on(&h.receive_server(&subscribed("e1", 9, Some("s1.1")))),
        []
    );
    // Before the latest answer: the next offset is delivered, a jump dropped.
    assert_eq!(on(&h.receive_server(&pub_msg(4))), [publication(4)]);
    assert_eq!(on(&h.receive_server(&pub_msg(7))), []);
    let mut seen = on(&h.receive_server(&recovered("e1", 7, "s1.2")));
    for offset in [5, 6, 7] {
        seen.extend(on(&h.receive_server(&pub_msg(offset))));
    }
    assert_eq!(
        seen,
        [
            subscribed_ev(true),
            publication(5),
            publication(6),
            publication(7)
        ]
    );
}

#[test]
fn dropping_unsubscribes_while_connected_and_undoes_a_late_subscribed() {
    let mut h = live();
    h.effects();
    h.d.unsubscribe(CH, 1);
    let unsubscribe = ClientMessage::Unsubscribe {
        channel: CH.into(),
        id: Some("u1".into()),
    };
    assert_eq!(client(&writes(&h.effects())), [unsubscribe]);
    let answer = ServerMessage::Unsubscribed {
        channel: CH.into(),
        reason: UnsubscribeReason::Client,
        id: Some("u1".into()),
    };
    assert_eq!(chan(&h.receive_server(&answer)), []);
    assert_eq!(chan(&h.receive_server(&pub_msg(3))), [], "no subscription");

    // Subscribed again, then dropped before the answer: the answer is undone.
    assert_eq!(h.d.subscribe(CH, None), Ok(2));
    h.d.unsubscribe(CH, 2);
    let effects = h.effects();
    assert_eq!(client(&writes(&effects)).len(), 2, "subscribe, unsubscribe");
    // Offline, a dropped handle writes nothing: the connection takes it along.
    assert_eq!(h.d.subscribe(CH, None), Ok(3));
    h.closed(ABNORMAL);
    h.d.unsubscribe(CH, 3);
    assert!(writes(&h.effects()).is_empty());
    h.fire(TimerKind::Retry);
    assert!(writes(&h.opened()).is_empty(), "nothing to resubscribe");
    let effects = h.receive_server(&subscribed("e1", 2, Some("s3.1")));
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Unsubscribe {
            channel: CH.into(),
            id: Some("u3".into())
        }]
    );
    // A stale serial's subscription is not undone once the channel has another.
    h.d.subscribe(CH, None).unwrap();
    h.effects();
    let effects = h.receive_server(&subscribed("e1", 2, Some("s3.1")));
    assert!(writes(&effects).is_empty());
}

#[test]
fn a_server_unsubscribe_ends_the_subscription_for_good() {
    let mut h = live();
    let ended = ServerMessage::Unsubscribed {
        channel: CH.into(),
        reason: UnsubscribeReason::Admin,
        id: None,
    };
    assert_eq!(
        on(&h.receive_server(&ended)),
        [ChannelEvent::Unsubscribed {
            reason: UnsubscribeReason::Admin
        }]
    );
    assert_eq!(on(&h.receive_server(&pub_msg(3))), []);
    assert!(writes(&reconnect(&mut h)).is_empty(), "not resubscribed");
}

#[test]
fn a_refused_subscribe_is_an_error_on_the_handle_and_is_not_retried() {
    let mut h = Harness::new(config()).open();
    h.d.subscribe("secret:x", None).unwrap();
    h.effects();
    let refused = ServerMessage::Error {
        code: ErrorCode::PermissionDenied,
        message: "no".into(),
        channel: Some("secret:x".into()),
        id: Some("s1.1".into()),
    };
    let effects = h.receive_server(&refused);
    assert_eq!(
        chan(&effects),
        [(
            "secret:x".into(),
            ChannelEvent::Error(ChannelError::Refused {
                code: ErrorCode::PermissionDenied,
                message: "no".into()
            })
        )]
    );
    assert!(
        !events(&effects)
            .iter()
            .any(|e| matches!(e, Event::Message(_)))
    );
    assert!(writes(&reconnect(&mut h)).is_empty());
}

fn publish_frame(frame: &Message) -> (String, String) {
    match client(std::slice::from_ref(frame)).pop() {
        Some(ClientMessage::Publish { channel, id, .. }) => (channel, id.unwrap()),
        other => panic!("not a publish: {other:?}"),
    }
}

#[test]
fn a_publish_waits_in_the_queue_bound_goes_out_when_ready_and_resolves_to_its_offset() {
    let mut h = Harness::new(config().with_queue_capacity(2));
    let answers = Answers::default();
    h.start();
    assert_eq!(publish(&mut h, &answers, 1, 0xabc), Ok(1));
    assert_eq!(h.send("a"), Ok(SendOutcome::Queued));
    // The publish holds a place of the queue's two.
    assert_eq!(h.send("b"), Err(SendError::QueueFull(text("b"))));
    assert_eq!(
        publish(&mut h, &answers, 2, 0xdef),
        Err(PublishError::QueueFull)
    );
    let effects = h.opened();
    let written = writes(&effects);
    assert_eq!(written.len(), 2, "the publish, then the queue");
    let (channel, id) = publish_frame(&written[0]);
    assert_eq!(
        (channel.as_str(), id.as_str()),
        (CH, "00000000000000000000000000000abc")
    );
    assert_eq!(written[1], text("a"));
    assert_eq!(answered(&answers), []);
    h.receive_server(&ServerMessage::Published {
        channel: CH.into(),
        offset: 41,
        id: Some(id.clone()),
    });
    assert_eq!(answered(&answers), [(1, Ok(41))]);
    // Answered: its place is free again; a repeated answer is ignored.
    assert_eq!(h.send("b"), Ok(SendOutcome::Sent));
    h.effects();
    let effects = h.receive_server(&ServerMessage::Published {
        channel: CH.into(),
        offset: 41,
        id: Some(id),
    });
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(answered(&answers).len(), 1, "answered once");
}

#[test]
fn a_publish_cut_before_its_answer_goes_out_again_with_its_id() {
    let mut h = Harness::new(config()).open();
    let answers = Answers::default();
    h.effects();
    publish(&mut h, &answers, 1, 7).unwrap();
    let (_, id) = publish_frame(&writes(&h.effects())[0]);
    let effects = reconnect(&mut h);
    let written = writes(&effects);
    assert_eq!(written.len(), 1);
    assert_eq!(publish_frame(&written[0]).1, id);
    assert!(matches!(written[0], Message::Text(_)));
    // Refused: an error with its id, the reason typed.
    let effects = h.receive_server(&ServerMessage::Error {
        code: ErrorCode::RateLimited,
        message: "slow down".into(),
        channel: Some(CH.into()),
        id: Some(id),
    });
    assert!(events(&effects).is_empty(), "not the application's message");
    assert_eq!(
        answered(&answers),
        [(
            1,
            Err(PublishError::Refused {
                code: ErrorCode::RateLimited,
                message: "slow down".into()
            })
        )]
    );
    assert!(
        writes(&reconnect(&mut h)).is_empty(),
        "answered: not retried"
    );
}

#[test]
fn channel_frames_are_not_handed_back_by_a_failed_write() {
    let mut h = Harness::new(config()).open();
    h.effects();
    h.d.subscribe(CH, None).unwrap();
    h.d.publish(CH, data(1), 7, Box::new(drop)).unwrap();
    assert!(h.effects().iter().all(|e| !matches!(
        e,
        Effect::Write {
            hand_back: true,
            ..
        }
    )));
}

#[test]
fn a_publish_after_close_is_refused() {
    let mut h = Harness::new(config()).open();
    h.d.close(NORMAL, "", 0.0).unwrap();
    assert_eq!(
        h.d.publish(CH, data(1), 1, Box::new(drop)),
        Err(PublishError::Closed)
    );
}

mod reliable {
    use super::*;

    fn reliable_open() -> Harness {
        let mut h = Harness::new(config().with_reliable(true)).open();
        h.receive_server(&welcome("s1"));
        h.effects();
        h
    }

    /// The applications texts inside the `msg`s among `effects`.
    fn inside(effects: &[Effect]) -> Vec<ClientMessage> {
        client(&writes(effects))
            .into_iter()
            .filter_map(|m| match m {
                ClientMessage::Msg { data, .. } => Some(ClientMessage::from_json(&data).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn msg(seq: u64, message: &ServerMessage) -> ServerMessage {
        server_msg(seq, &message.to_json())
    }

    #[test]
    fn subscribe_and_publish_go_inside_the_session_and_pubs_come_unnumbered() {
        let mut h = reliable_open();
        let answers = Answers::default();
        h.d.subscribe(CH, None).unwrap();
        publish(&mut h, &answers, 1, 5).unwrap();
        let sent = inside(&h.effects());
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0], subscribe_frame(None, "s1.1"));
        assert!(matches!(sent[1], ClientMessage::Publish { .. }));
        // The answers are numbered, the publications are not.
        let effects = h.receive_server(&msg(1, &subscribed("e1", 2, Some("s1.1"))));
        assert_eq!(on(&effects), [subscribed_ev(false)]);
        assert_eq!(on(&h.receive_server(&pub_msg(3))), [publication(3)]);
        let published = ServerMessage::Published {
            channel: CH.into(),
            offset: 3,
            id: Some(format!("{:032x}", 5)),
        };
        h.receive_server(&msg(2, &published));
        assert_eq!(answered(&answers), [(1, Ok(3))]);
    }

    #[test]
    fn a_resumed_session_resends_the_publish_and_the_table_resubscribes() {
        let mut h = reliable_open();
        h.d.subscribe(CH, None).unwrap();
        h.effects();
        h.receive_server(&msg(1, &subscribed("e1", 2, Some("s1.1"))));
        h.receive_server(&pub_msg(3));
        h.d.publish(CH, data(1), 5, Box::new(drop)).unwrap();
        h.effects();
        reconnect(&mut h);
        let effects = h.receive_server(&ServerMessage::Resumed { last_seq: 1 });
        // The session resends the publish (seq 2); the table writes only
        // the subscription, from offset 3.
        let frames = client(&writes(&effects));
        assert!(matches!(frames[0], ClientMessage::Msg { seq: 2, .. }));
        assert_eq!(
            inside(&effects)[1..],
            [subscribe_frame(Some(("e1", 3)), "s1.2")]
        );
    }

    #[test]
    fn a_lost_session_gives_back_the_application_s_texts_and_the_table_retries_its_own() {
        let mut h = reliable_open();
        h.d.subscribe(CH, None).unwrap();
        h.d.publish(CH, data(1), 5, Box::new(drop)).unwrap();
        h.send("app").unwrap();
        h.effects();
        reconnect(&mut h);
        h.receive_server(&welcome("s2"));
        let effects = h.receive_server(&ServerMessage::ResumeFailed {
            reason: ResumeFailure::UnknownSession,
        });
        assert!(events(&effects).contains(&Event::ResumeFailed {
            reason: ResumeFailure::UnknownSession,
            unconfirmed: vec![text("app")]
        }));
        let sent = inside(&effects);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0], subscribe_frame(None, "s1.2"));
        assert!(
            matches!(&sent[1], ClientMessage::Publish { id: Some(id), .. } if *id == format!("{:032x}", 5))
        );
    }
}
