//! Presence shared across tabs (issue 24): a tab's query is asked on the
//! leader's connection and answered to that tab alone; joins and leaves
//! reach every subscribed tab; a followed subscription asks for its members
//! at each `subscribed` it hears; forged and out-of-range requests are
//! ignored. Every post goes through the JSON of the tab wire.

use shared::ErrorCode;
use shared::channel::{Member, StreamPosition};

use super::*;
use crate::channel::{ChannelError, ChannelEvent, Presence, PresenceError, PresenceStats};

const CH: &str = "chat:a";

/// Three tabs: leader `l`, followers `f` and `g`.
fn three() -> (Tabs, Tabs, Tabs) {
    let (mut l, mut f) = pair(true);
    let mut g = Tabs::new(id("g"), &config(true));
    g.start();
    settle(&mut [&mut l, &mut f, &mut g], 0.5);
    assert!(g.has_leader());
    (l, f, g)
}

fn member(client_id: &str) -> Member {
    Member {
        client_id: client_id.into(),
        user: Some("u\u{e9}".into()),
        client_name: None,
    }
}

fn members(ids: &[&str]) -> Presence {
    Presence {
        members: ids.iter().map(|id| member(id)).collect(),
        truncated: false,
    }
}

/// The leader's queries to its socket: (tab, id, stats).
fn queries(effects: &[Effect]) -> Vec<(TabId, String, bool)> {
    calls(effects)
        .into_iter()
        .filter_map(|c| match c {
            SocketCall::Query { tab, id, stats, .. } => Some((tab, id, stats)),
            _ => None,
        })
        .collect()
}

/// The presence answers delivered to a tab's app.
fn answers(effects: &[Effect]) -> Vec<(String, Result<PresenceAnswer, PresenceError>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver(TabEvent::Presence { id, result }) => {
                Some((id.clone(), result.clone()))
            }
            _ => None,
        })
        .collect()
}

fn report(l: &mut Tabs, report: SocketReport) {
    l.handle(Input::Socket(report), 1.0);
}

fn answered(
    tab: TabId,
    id: &str,
    result: Result<PresenceAnswer, (ErrorCode, String)>,
) -> SocketReport {
    SocketReport::Presence {
        tab,
        id: id.into(),
        channel: CH.into(),
        result,
    }
}

fn subscribed(l: &mut Tabs, offset: u64) {
    report(
        l,
        SocketReport::Channel {
            channel: CH.into(),
            position: Some(StreamPosition {
                epoch: "e".into(),
                offset,
            }),
            event: ChannelEvent::Subscribed { recovered: false },
        },
    );
}

#[test]
fn a_follower_s_query_is_asked_by_the_leader_and_answered_to_it_alone() {
    let (mut l, mut f, mut g) = three();
    let asked = f.presence(CH, false).unwrap();
    let stats = f.presence(CH, true).unwrap();
    let out = settle(&mut [&mut l, &mut f, &mut g], 1.0);
    assert_eq!(
        queries(&out[0]),
        [
            (id("f"), asked.clone(), false),
            (id("f"), stats.clone(), true)
        ],
        "asked on the leader's connection, for f"
    );
    report(
        &mut l,
        answered(
            id("f"),
            &asked,
            Ok(PresenceAnswer::Members(members(&["c1"]))),
        ),
    );
    let counted = PresenceStats {
        clients: 1,
        users: 1,
    };
    report(
        &mut l,
        answered(id("f"), &stats, Ok(PresenceAnswer::Stats(counted))),
    );
    // Answered once: a repeat of the driver's answer finds no asker.
    report(
        &mut l,
        answered(id("f"), &stats, Ok(PresenceAnswer::Stats(counted))),
    );
    let out = settle(&mut [&mut l, &mut f, &mut g], 1.0);
    assert_eq!(
        answers(&out[1]),
        [
            (asked, Ok(PresenceAnswer::Members(members(&["c1"])))),
            (stats, Ok(PresenceAnswer::Stats(counted))),
        ]
    );
    assert!(answers(&out[0]).is_empty(), "not the leader's");
    assert!(answers(&out[2]).is_empty(), "not g's");

    // The server's refusal comes back as one.
    let refused = g.presence(CH, false).unwrap();
    settle(&mut [&mut l, &mut f, &mut g], 1.0);
    let code = ErrorCode::from("permission_denied".to_owned());
    report(
        &mut l,
        answered(id("g"), &refused, Err((code.clone(), "no".into()))),
    );
    let out = settle(&mut [&mut l, &mut f, &mut g], 1.0);
    assert_eq!(
        answers(&out[2]),
        [(
            refused,
            Err(PresenceError::Refused {
                code,
                message: "no".into()
            })
        )]
    );
    assert!(answers(&out[1]).is_empty());
}

#[test]
fn the_leader_s_own_query_goes_to_its_socket_and_comes_back_to_it() {
    let (mut l, mut f) = pair(true);
    let asked = l.presence(CH, true).unwrap();
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(queries(&out[0]), [(id("l"), asked.clone(), true)]);
    let counted = PresenceStats {
        clients: 2,
        users: 0,
    };
    report(
        &mut l,
        answered(id("l"), &asked, Ok(PresenceAnswer::Stats(counted))),
    );
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(
        answers(&out[0]),
        [(asked, Ok(PresenceAnswer::Stats(counted)))]
    );
    assert!(answers(&out[1]).is_empty());
}

#[test]
fn unanswered_queries_are_asked_again_of_the_next_leader() {
    let (mut l, mut f) = pair(true);
    let asked = f.presence(CH, false).unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    // The leader goes before the answer; f leads and asks its own socket.
    drop(l.close());
    settle(&mut [&mut l, &mut f], 2.0);
    f.handle(Input::LockAcquired, 2.0);
    let out = drain(&mut f);
    assert_eq!(queries(&out), [(id("f"), asked.clone(), false)]);
    report(
        &mut f,
        answered(id("f"), &asked, Ok(PresenceAnswer::Members(members(&[])))),
    );
    assert_eq!(
        answers(&drain(&mut f)),
        [(asked, Ok(PresenceAnswer::Members(members(&[]))))]
    );
}

#[test]
fn joins_and_leaves_reach_every_subscribed_tab() {
    let (mut l, mut f, mut g) = three();
    l.subscribe(CH, 1, None).unwrap();
    f.subscribe(CH, 7, None).unwrap();
    settle(&mut [&mut l, &mut f, &mut g], 1.0);
    subscribed(&mut l, 0);
    for event in [
        ChannelEvent::Join(member("x")),
        ChannelEvent::Leave(member("x")),
    ] {
        report(
            &mut l,
            SocketReport::Channel {
                channel: CH.into(),
                position: None,
                event,
            },
        );
    }
    let out = settle(&mut [&mut l, &mut f, &mut g], 1.0);
    for (tab, serial) in [(0, 1), (1, 7)] {
        assert_eq!(
            events(&out[tab]),
            [
                (serial, ChannelEvent::Subscribed { recovered: false }),
                (serial, ChannelEvent::Join(member("x"))),
                (serial, ChannelEvent::Leave(member("x"))),
            ],
            "tab {tab}"
        );
    }
    assert!(events(&out[2]).is_empty(), "g did not subscribe");
}

#[test]
fn a_followed_subscription_asks_for_its_members_at_each_subscribed() {
    let (mut l, mut f) = pair(true);
    f.subscribe(CH, 7, None).unwrap();
    f.follow_presence(CH, 7);
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert!(
        queries(&out[0]).is_empty(),
        "not subscribed yet: nothing asked"
    );
    subscribed(&mut l, 0);
    let out = settle(&mut [&mut l, &mut f], 1.0);
    let [(tab, follow, false)] = &queries(&out[0])[..] else {
        panic!("one members query: {:?}", queries(&out[0]));
    };
    assert_eq!(*tab, id("f"));
    report(
        &mut l,
        answered(
            id("f"),
            follow,
            Ok(PresenceAnswer::Members(members(&["c1"]))),
        ),
    );
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(
        events(&out[1]),
        [(7, ChannelEvent::Presence(members(&["c1"])))]
    );
    assert!(
        answers(&out[1]).is_empty(),
        "a subscription's, not the app's query"
    );

    // The leader subscribes again (a reconnect): asked again, once; the
    // refusal of that query is the subscription's error, which goes on.
    subscribed(&mut l, 0);
    subscribed(&mut l, 0);
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(
        queries(&out[0]).len(),
        1,
        "asked again once: {:?}",
        queries(&out[0])
    );
    let code = ErrorCode::from("permission_denied".to_owned());
    report(
        &mut l,
        answered(id("f"), follow, Err((code.clone(), "no".into()))),
    );
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(
        events(&out[1]),
        [(
            7,
            ChannelEvent::Error(ChannelError::PresenceRefused {
                code,
                message: "no".into()
            })
        )]
    );
    // Following a live subscription asks now.
    l.subscribe(CH, 1, None).unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    l.follow_presence(CH, 1);
    assert_eq!(queries(&drain(&mut l)), [(id("l"), "f1".into(), false)]);
}

#[test]
fn forged_and_out_of_range_queries_are_ignored() {
    let (mut l, mut f) = pair(true);
    let post = |from: TabId, channel: &str, id: &str| {
        Input::Posted(
            Envelope {
                v: TAB_PROTOCOL,
                from,
                body: TabMessage::Presence {
                    channel: channel.into(),
                    id: id.into(),
                    stats: false,
                },
            }
            .to_json(),
        )
    };
    // A stranger is told to rejoin; nothing is asked.
    l.handle(post(id("stranger"), CH, "q1"), 1.0);
    let effects = drain(&mut l);
    assert!(queries(&effects).is_empty());
    assert!(matches!(bodies(&effects)[..], [TabMessage::Rejoin { .. }]));
    // Bad names and ids from a known tab: ignored.
    for (channel, query) in [
        ("no spaces", "q1"),
        (CH, ""),
        (CH, "q-1"),
        (CH, "\"q1\""),
        (CH, &"q".repeat(25)),
    ] {
        l.handle(post(id("f"), channel, query), 1.0);
        assert!(queries(&drain(&mut l)).is_empty(), "{channel:?} {query:?}");
    }
    // One query per id; a bound per tab.
    for k in 0..MAX_QUERIES_PER_TAB + MAX_CHANNELS_PER_TAB + 5 {
        l.handle(post(id("f"), CH, &format!("q{k}")), 1.0);
        l.handle(post(id("f"), CH, &format!("q{k}")), 1.0);
    }
    assert_eq!(
        queries(&drain(&mut l)).len(),
        MAX_QUERIES_PER_TAB + MAX_CHANNELS_PER_TAB
    );
    // A tab's own bound, and its refusals before the leader.
    for _ in 0..MAX_QUERIES_PER_TAB {
        f.presence(CH, true).unwrap();
    }
    assert_eq!(f.presence(CH, true), Err(PresenceError::QueueFull));
    assert!(matches!(
        f.presence("no spaces", false),
        Err(PresenceError::Refused { .. })
    ));
    drop(f.close());
    assert_eq!(f.presence(CH, false), Err(PresenceError::Closed));
}

#[test]
fn answers_and_joins_count_only_from_the_leader_and_when_they_decode() {
    let (mut l, mut f) = pair(true);
    f.subscribe(CH, 7, None).unwrap();
    let asked = f.presence(CH, false).unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    subscribed(&mut l, 0);
    settle(&mut [&mut l, &mut f], 1.0);
    let server = |from: TabId, frame: &str| {
        let body = TabMessage::Server {
            to: Some(id("f")),
            frame: shared::channel::RawJson::parse(frame).unwrap(),
        };
        let env = Envelope {
            v: TAB_PROTOCOL,
            from,
            body,
        };
        Input::Posted(env.to_json())
    };
    let answer = format!(r#"{{"type":"presence","channel":"chat:a","clients":[],"id":"{asked}"}}"#);
    f.handle(server(id("stranger"), &answer), 1.0);
    f.handle(
        server(
            id("stranger"),
            r#"{"type":"join","channel":"chat:a","info":{"client_id":"x"}}"#,
        ),
        1.0,
    );
    // From the leader, but not a channel frame that decodes.
    for noise in [
        r#"{"type":"presence","channel":"chat:a","id":"q1"}"#.to_owned(),
        r#"{"type":"join","channel":"chat:a"}"#.to_owned(),
        r#"{"type":"push","seq":1,"sent_at_ms":0,"body":"x"}"#.to_owned(),
        r#"[1]"#.to_owned(),
        answer.replace("\"presence\"", "\"presence_stats\""),
    ] {
        f.handle(server(id("l"), &noise), 1.0);
    }
    assert!(drain(&mut f).is_empty(), "nothing delivered");
    // The real one, once.
    f.handle(server(id("l"), &answer), 1.0);
    f.handle(server(id("l"), &answer), 1.0);
    assert_eq!(
        answers(&drain(&mut f)),
        [(asked, Ok(PresenceAnswer::Members(Presence::default())))]
    );
}
