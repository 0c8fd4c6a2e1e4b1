//! Driver rules: presence (`driver/channels.rs`, issue 24): queries asked
//! when ready, unnumbered in reliable mode, asked again after a cut, and
//! answered once; join and leave on their subscription; a followed
//! subscription's members asked for after each `subscribed`.

use std::sync::{Arc, Mutex};

use shared::ErrorCode;
use shared::channel::Member;

use super::channels::{CH, live, on, reconnect, subscribed, subscribed_ev};
use super::*;
use crate::channel::{ChannelError, ChannelEvent, Presence, PresenceError, PresenceStats};

type Got<T> = Arc<Mutex<Vec<Result<T, PresenceError>>>>;

fn ask_members(h: &mut Harness) -> Got<Presence> {
    let got = Got::default();
    let sink = got.clone();
    let answer = Box::new(move |result| sink.lock().unwrap().push(result));
    h.d.query(CH, Query::Members(answer)).unwrap();
    got
}

fn ask_stats(h: &mut Harness) -> Got<PresenceStats> {
    let got = Got::default();
    let sink = got.clone();
    let answer = Box::new(move |result| sink.lock().unwrap().push(result));
    h.d.query(CH, Query::Stats(answer)).unwrap();
    got
}

fn member(id: &str) -> Member {
    Member {
        client_id: id.into(),
        user: None,
        client_name: None,
    }
}

fn presence_answer(ids: &[&str], id: &str) -> ServerMessage {
    ServerMessage::Presence {
        channel: CH.into(),
        clients: ids.iter().map(|c| member(c)).collect(),
        truncated: None,
        id: Some(id.into()),
    }
}

fn presence_of(ids: &[&str]) -> Presence {
    Presence {
        members: ids.iter().map(|c| member(c)).collect(),
        truncated: false,
    }
}

fn query_frame(id: &str) -> ClientMessage {
    ClientMessage::Presence {
        channel: CH.into(),
        id: Some(id.into()),
    }
}

fn refused(id: &str) -> ServerMessage {
    ServerMessage::Error {
        code: ErrorCode::PermissionDenied,
        message: "no".into(),
        channel: Some(CH.into()),
        id: Some(id.into()),
    }
}

#[test]
fn a_query_waits_for_the_connection_and_resolves_once_to_its_answer() {
    let mut h = Harness::new(config());
    h.start();
    let got = ask_members(&mut h);
    assert!(writes(&h.effects()).is_empty(), "not open: nothing written");
    let effects = h.opened();
    assert_eq!(client(&writes(&effects)), [query_frame("q1")]);
    let effects = h.receive_server(&presence_answer(&["a", "b"], "q1"));
    assert!(
        events(&effects).is_empty(),
        "the answer is the query's, not a message: {effects:?}"
    );
    assert_eq!(*got.lock().unwrap(), [Ok(presence_of(&["a", "b"]))]);
    // A repeat of the answer finds no query.
    h.receive_server(&presence_answer(&["a"], "q1"));
    assert_eq!(got.lock().unwrap().len(), 1);
}

#[test]
fn stats_and_refusals_answer_their_own_query() {
    let mut h = Harness::new(config()).open();
    h.effects();
    let members = ask_members(&mut h);
    let stats = ask_stats(&mut h);
    let frames = client(&writes(&h.effects()));
    assert_eq!(frames[0], query_frame("q1"));
    assert_eq!(
        frames[1],
        ClientMessage::PresenceStats {
            channel: CH.into(),
            id: Some("q2".into())
        }
    );
    h.receive_server(&ServerMessage::PresenceStats {
        channel: CH.into(),
        clients: 3,
        users: 2,
        id: Some("q2".into()),
    });
    h.receive_server(&refused("q1"));
    let expected = PresenceStats {
        clients: 3,
        users: 2,
    };
    assert_eq!(*stats.lock().unwrap(), [Ok(expected)]);
    assert_eq!(
        *members.lock().unwrap(),
        [Err(PresenceError::Refused {
            code: ErrorCode::PermissionDenied,
            message: "no".into()
        })]
    );
}

#[test]
fn a_query_cut_before_its_answer_is_asked_again_on_the_next_connection() {
    let mut h = Harness::new(config()).open();
    h.effects();
    let got = ask_members(&mut h);
    h.effects();
    let effects = reconnect(&mut h);
    assert_eq!(client(&writes(&effects)), [query_frame("q1")]);
    h.receive_server(&presence_answer(&["a"], "q1"));
    assert_eq!(*got.lock().unwrap(), [Ok(presence_of(&["a"]))]);
    let effects = reconnect(&mut h);
    assert!(writes(&effects).is_empty(), "answered: not asked again");
}

#[test]
fn a_query_counts_against_the_queue_and_is_refused_after_close() {
    let mut h = Harness::new(config().with_queue_capacity(1));
    h.start();
    ask_members(&mut h);
    let answer = Box::new(|_| {});
    assert_eq!(
        h.d.query(CH, Query::Members(answer)),
        Err(PresenceError::QueueFull)
    );
    h.d.close(NORMAL, "", 0.0).unwrap();
    assert_eq!(
        h.d.query(CH, Query::Stats(Box::new(|_| {}))),
        Err(PresenceError::Closed)
    );
}

#[test]
fn a_presence_answer_that_is_not_ours_is_the_application_s_message() {
    let mut h = Harness::new(config()).open();
    h.effects();
    ask_members(&mut h);
    let theirs = ServerMessage::Presence {
        channel: CH.into(),
        clients: vec![],
        truncated: None,
        id: Some("mine".into()),
    };
    let effects = h.receive_server(&theirs);
    assert_eq!(events(&effects), [Event::Message(text(&theirs.to_json()))]);
}

#[test]
fn join_and_leave_are_their_subscription_s_events() {
    let mut h = live();
    let join = ServerMessage::Join {
        channel: CH.into(),
        info: member("b"),
    };
    let leave = ServerMessage::Leave {
        channel: CH.into(),
        info: member("b"),
    };
    assert_eq!(
        on(&h.receive_server(&join)),
        [ChannelEvent::Join(member("b"))]
    );
    assert_eq!(
        on(&h.receive_server(&leave)),
        [ChannelEvent::Leave(member("b"))]
    );
    // Another channel's, with no subscription here: nobody's, and not a message.
    let stray = ServerMessage::Join {
        channel: "chat:other".into(),
        info: member("c"),
    };
    assert!(events(&h.receive_server(&stray)).is_empty());
}

#[test]
fn a_followed_subscription_asks_for_its_members_after_each_subscribed() {
    let mut h = live();
    h.effects();
    h.d.follow_presence(CH, 1);
    assert_eq!(client(&writes(&h.effects())), [query_frame("f1")]);
    let effects = h.receive_server(&presence_answer(&["a"], "f1"));
    assert_eq!(on(&effects), [ChannelEvent::Presence(presence_of(&["a"]))]);
    // After a reconnect: subscribed again, then asked again.
    let effects = reconnect(&mut h);
    let frames = client(&writes(&effects));
    assert!(
        matches!(frames.as_slice(), [ClientMessage::Subscribe { .. }]),
        "the members are asked for once subscribed, not before: {frames:?}"
    );
    let effects = h.receive_server(&subscribed("e1", 2, Some("s1.2")));
    assert_eq!(client(&writes(&effects)), [query_frame("f1")]);
    let effects = h.receive_server(&refused("f1"));
    assert_eq!(
        on(&effects),
        [ChannelEvent::Error(ChannelError::PresenceRefused {
            code: ErrorCode::PermissionDenied,
            message: "no".into()
        })]
    );
}

#[test]
fn following_before_the_subscription_is_live_asks_once_it_is() {
    let mut h = Harness::new(config()).open();
    h.effects();
    h.d.subscribe(CH, None).unwrap();
    h.d.follow_presence(CH, 1);
    let frames = client(&writes(&h.effects()));
    assert_eq!(frames.len(), 1, "the subscribe only: {frames:?}");
    let effects = h.receive_server(&subscribed("e1", 0, Some("s1.1")));
    assert_eq!(on(&effects), [subscribed_ev(false)]);
    assert_eq!(client(&writes(&effects)), [query_frame("f1")]);
    // Following twice asks nothing more.
    h.d.follow_presence(CH, 1);
    assert!(writes(&h.effects()).is_empty());
}

mod reliable {
    use super::*;

    #[test]
    fn queries_go_unnumbered_at_the_top_level_and_are_asked_again_after_a_resume() {
        let mut h = Harness::new(config().with_reliable(true)).open();
        h.receive_server(&welcome("s1"));
        h.effects();
        let got = ask_stats(&mut h);
        assert_eq!(
            client(&writes(&h.effects())),
            [ClientMessage::PresenceStats {
                channel: CH.into(),
                id: Some("q1".into())
            }],
            "at the top level, not inside a msg"
        );
        reconnect(&mut h);
        let effects = h.receive_server(&ServerMessage::Resumed { last_seq: 0 });
        assert_eq!(
            client(&writes(&effects)),
            [ClientMessage::PresenceStats {
                channel: CH.into(),
                id: Some("q1".into())
            }]
        );
        h.receive_server(&ServerMessage::PresenceStats {
            channel: CH.into(),
            clients: 1,
            users: 0,
            id: Some("q1".into()),
        });
        assert_eq!(got.lock().unwrap().len(), 1);
    }
}
