//! Channels shared across tabs: one server subscription per channel,
//! counted by tab and released when a tab goes; each tab's publications
//! once and in order; the resubscribe position after a handoff; publish
//! answers routed to the publisher; forged and out-of-range posts ignored.

use shared::channel::{RawJson, StreamPosition};

use super::*;
use crate::channel::{ChannelEvent, PublishError};

const CH: &str = "chat:a";

fn publication(offset: u64) -> ChannelEvent {
    ChannelEvent::Publication {
        offset,
        data: RawJson::parse(&offset.to_string()).unwrap(),
        info: None,
    }
}

fn at(offset: u64) -> Option<StreamPosition> {
    Some(StreamPosition {
        epoch: "e".into(),
        offset,
    })
}

/// The leader's driver reports `event` about [`CH`], at `position`.
fn report(l: &mut Tabs, event: ChannelEvent, position: Option<StreamPosition>) {
    let report = SocketReport::Channel {
        channel: CH.into(),
        position,
        event,
    };
    l.handle(Input::Socket(report), 1.0);
}

fn subscribes(effects: &[Effect]) -> usize {
    calls(effects)
        .iter()
        .filter(|c| matches!(c, SocketCall::Subscribe { .. }))
        .count()
}

fn unsubscribes(effects: &[Effect]) -> usize {
    calls(effects)
        .iter()
        .filter(|c| matches!(c, SocketCall::Unsubscribe { .. }))
        .count()
}

#[test]
fn two_tabs_share_one_server_subscription_counted_by_reference() {
    let (mut l, mut f) = pair(true);
    l.subscribe(CH, 1, None).unwrap();
    f.subscribe(CH, 7, None).unwrap();
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(subscribes(&out[0]), 1, "one server subscription");
    let entry = &l.shared().channels[0];
    assert_eq!(entry.tabs.len(), 2);
    assert_eq!(f.shared().channels, l.shared().channels, "replicated");
    // A second subscribe of the same channel in one tab is refused.
    assert!(f.subscribe(CH, 8, None).is_err());
    // The first reference goes: the subscription stays.
    l.unsubscribe(CH, 1);
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(unsubscribes(&out[0]), 0);
    assert_eq!(l.shared().channels[0].tabs, [id("f")]);
    // A stale serial changes nothing; the last reference ends it.
    f.unsubscribe(CH, 1);
    settle(&mut [&mut l, &mut f], 1.0);
    f.unsubscribe(CH, 7);
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(unsubscribes(&out[0]), 1);
    assert!(l.shared().channels.is_empty());
    assert!(f.shared().channels.is_empty());
}

#[test]
fn publications_reach_each_subscribed_tab_once_in_order_or_as_a_gap() {
    let (mut l, mut f) = pair(true);
    l.subscribe(CH, 1, None).unwrap();
    f.subscribe(CH, 7, None).unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    report(&mut l, ChannelEvent::Subscribed { recovered: false }, at(0));
    for offset in [1, 2, 2, 1, 5] {
        report(&mut l, publication(offset), at(offset));
    }
    let out = settle(&mut [&mut l, &mut f], 1.0);
    for (tab, serial) in [(0, 1), (1, 7)] {
        assert_eq!(
            events(&out[tab]),
            [
                ChannelEvent::Subscribed { recovered: false },
                publication(1),
                publication(2),
                ChannelEvent::Gap { from: 3, to: 4 },
                publication(5),
            ]
            .map(|e| (serial, e)),
            "tab {tab}"
        );
    }
    assert_eq!(f.shared().channels[0].position, at(5));
    assert_eq!(f.channel_position(CH, 7), at(5));
}

#[test]
fn a_tab_joining_a_live_channel_starts_where_the_others_are() {
    let (mut l, mut f) = pair(true);
    l.subscribe(CH, 1, None).unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    report(&mut l, ChannelEvent::Subscribed { recovered: false }, at(3));
    report(&mut l, publication(4), at(4));
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert!(events(&out[1]).is_empty(), "f did not subscribe");
    // f asks from offset 2: offsets 3 and 4 went by, a gap for it.
    f.subscribe(CH, 9, at(2)).unwrap();
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(subscribes(&out[0]), 0, "the server subscription is reused");
    assert!(
        events(&out[0]).is_empty(),
        "the leader's app hears nothing new"
    );
    assert_eq!(
        events(&out[1]),
        [
            (9, ChannelEvent::Subscribed { recovered: false }),
            (9, ChannelEvent::Gap { from: 3, to: 4 }),
        ]
    );
    report(&mut l, publication(5), at(5));
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(events(&out[1]), [(9, publication(5))]);
    assert_eq!(events(&out[0]), [(1, publication(5))]);
}

#[test]
fn a_tab_s_references_go_at_its_bye_and_when_it_is_forgotten() {
    let (mut l, mut f) = pair(true);
    f.subscribe(CH, 7, None).unwrap();
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(subscribes(&out[0]), 1);
    // f closes without unsubscribing.
    drop(f.close());
    let out = settle(&mut [&mut l, &mut f], 2.0);
    assert_eq!(unsubscribes(&out[0]), 1, "released at its Bye");
    assert!(l.shared().channels.is_empty());

    // Another follower that goes silent.
    let mut g = Tabs::new(id("g"), &config(true));
    g.start();
    settle(&mut [&mut l, &mut g], 3.0);
    g.subscribe(CH, 1, None).unwrap();
    let out = settle(&mut [&mut l, &mut g], 3.0);
    assert_eq!(subscribes(&out[0]), 1);
    l.handle(Input::Tick, 3.0 + FORGET_MS / 2.0);
    assert_eq!(unsubscribes(&drain(&mut l)), 0, "not forgotten yet");
    l.handle(Input::Tick, 3.0 + FORGET_MS + 1.0);
    assert_eq!(unsubscribes(&drain(&mut l)), 1, "released when forgotten");
    assert!(l.shared().channels.is_empty());
}

#[test]
fn a_forgotten_tab_that_comes_back_subscribes_again_from_where_it_is() {
    let (mut l, mut f) = pair(true);
    f.subscribe(CH, 7, None).unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    report(&mut l, ChannelEvent::Subscribed { recovered: false }, at(0));
    for offset in 1..=3 {
        report(&mut l, publication(offset), at(offset));
    }
    settle(&mut [&mut l, &mut f], 1.0);
    // f's timers sleep (a hidden tab): the leader forgets it.
    let later = 1.0 + FORGET_MS + 1.0;
    l.handle(Input::Tick, later);
    let out = settle(&mut [&mut l, &mut f], later);
    assert_eq!(unsubscribes(&out[0]), 1);
    // f speaks again: told to rejoin, it says hello and resends its
    // subscription from offset 3, which the new server subscription
    // recovers from.
    f.handle(Input::Tick, later);
    let out = settle(&mut [&mut l, &mut f], later);
    assert_eq!(
        calls(&out[0]),
        [SocketCall::Subscribe {
            channel: CH.into(),
            since: at(3),
        }]
    );
    report(&mut l, ChannelEvent::Subscribed { recovered: true }, at(3));
    report(&mut l, publication(4), at(4));
    let out = settle(&mut [&mut l, &mut f], later);
    assert_eq!(
        events(&out[1]),
        [
            (7, ChannelEvent::Subscribed { recovered: true }),
            (7, publication(4)),
        ]
    );
}

#[test]
fn the_next_leader_resubscribes_from_what_the_tabs_delivered_and_they_drop_repeats() {
    let (mut l, mut f) = pair(true);
    l.subscribe(CH, 1, None).unwrap();
    f.subscribe(CH, 7, None).unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    report(&mut l, ChannelEvent::Subscribed { recovered: false }, at(0));
    for offset in 1..=3 {
        report(&mut l, publication(offset), at(offset));
    }
    settle(&mut [&mut l, &mut f], 1.0);
    // The leader closes without unsubscribing: f leads.
    drop(l.close());
    settle(&mut [&mut l, &mut f], 2.0);
    f.handle(Input::LockAcquired, 2.0);
    let out = settle(&mut [&mut f], 2.0);
    let open = calls(&out[0]);
    let Some(SocketCall::Open { resume }) = open.first() else {
        panic!("{open:?}")
    };
    assert_eq!(
        resume.channels,
        [SharedChannel {
            channel: CH.into(),
            tabs: vec![id("f")],
            position: at(3),
        }],
        "from offset 3, the old leader's reference gone"
    );
    assert_eq!(subscribes(&out[0]), 0, "the open subscribes, nothing more");
    // The new socket recovers from 3; the server replays 3 (dropped).
    report(&mut f, ChannelEvent::Subscribed { recovered: true }, at(3));
    for offset in [3, 4] {
        report(&mut f, publication(offset), at(offset));
    }
    let out = settle(&mut [&mut f], 2.0);
    assert_eq!(
        events(&out[0]),
        [
            (7, ChannelEvent::Subscribed { recovered: true }),
            (7, publication(4)),
        ]
    );
}

#[test]
fn a_publish_is_answered_to_its_tab_and_resent_with_its_id_to_the_next_leader() {
    let (mut l, mut f) = pair(true);
    let id_f = format!("{:032x}", 0xf1_u128);
    f.publish(CH, id_f.clone(), RawJson::parse("1").unwrap())
        .unwrap();
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(
        calls(&out[0]),
        [SocketCall::Publish {
            channel: CH.into(),
            id: id_f.clone(),
            data: RawJson::parse("1").unwrap(),
        }]
    );
    // Resent (as after a handoff): not handed to the socket twice.
    relay(
        &[Effect::Broadcast(Envelope {
            v: TAB_PROTOCOL,
            from: id("f"),
            body: TabMessage::Publish {
                channel: CH.into(),
                id: id_f.clone(),
                data: RawJson::parse("1").unwrap(),
            },
        })],
        &mut l,
        1.0,
    );
    assert!(calls(&drain(&mut l)).is_empty());
    let answer = SocketReport::Published {
        id: id_f.clone(),
        result: Ok(7),
    };
    l.handle(Input::Socket(answer.clone()), 1.0);
    let out = settle(&mut [&mut l, &mut f], 1.0);
    let published = |effects: &[Effect]| -> Vec<TabEvent> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Deliver(event @ TabEvent::Published { .. }) => Some(event.clone()),
                _ => None,
            })
            .collect()
    };
    assert!(published(&out[0]).is_empty(), "not the leader's");
    assert_eq!(
        published(&out[1]),
        [TabEvent::Published {
            id: id_f.clone(),
            result: Ok(7),
        }]
    );
    // A repeated answer is no second answer.
    l.handle(Input::Socket(answer), 1.0);
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert!(published(&out[1]).is_empty());

    // An unanswered publish goes to the next leader with the same id.
    let id_2 = format!("{:032x}", 0xf2_u128);
    f.publish(CH, id_2.clone(), RawJson::parse("2").unwrap())
        .unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    drop(l.close());
    settle(&mut [&mut l, &mut f], 2.0);
    f.handle(Input::LockAcquired, 2.0);
    let out = settle(&mut [&mut f], 2.0);
    assert!(calls(&out[0]).contains(&SocketCall::Publish {
        channel: CH.into(),
        id: id_2.clone(),
        data: RawJson::parse("2").unwrap(),
    }));
    // A refusal reaches the app as the server's.
    let refused = SocketReport::Published {
        id: id_2,
        result: Err((
            shared::ErrorCode::from("rate_limited".to_owned()),
            "slow".into(),
        )),
    };
    f.handle(Input::Socket(refused), 2.0);
    let out = settle(&mut [&mut f], 2.0);
    assert!(matches!(
        &published(&out[0])[..],
        [TabEvent::Published {
            result: Err(PublishError::Refused { .. }),
            ..
        }]
    ));
}

#[test]
fn forged_and_out_of_range_channel_posts_are_ignored() {
    let (mut l, _f) = pair(true);
    let post = |from: TabId, body: TabMessage| {
        Input::Channel(Envelope {
            v: TAB_PROTOCOL,
            from,
            body,
        })
    };
    // A stranger's subscribe: told to rejoin, nothing subscribed.
    l.handle(
        post(
            id("stranger"),
            TabMessage::Subscribe {
                channel: CH.into(),
                since: None,
            },
        ),
        1.0,
    );
    let effects = drain(&mut l);
    assert!(calls(&effects).is_empty());
    assert!(matches!(bodies(&effects)[..], [TabMessage::Rejoin { .. }]));
    // A known tab's bad channel name, bad publish ids.
    for body in [
        TabMessage::Subscribe {
            channel: "no spaces".into(),
            since: None,
        },
        TabMessage::Publish {
            channel: CH.into(),
            id: "short".into(),
            data: RawJson::parse("1").unwrap(),
        },
        TabMessage::Publish {
            channel: CH.into(),
            id: "G".repeat(32),
            data: RawJson::parse("1").unwrap(),
        },
        TabMessage::Publish {
            channel: "".into(),
            id: "0".repeat(32),
            data: RawJson::parse("1").unwrap(),
        },
    ] {
        l.handle(post(id("f"), body), 1.0);
        assert!(calls(&drain(&mut l)).is_empty());
    }
    // At most MAX_CHANNELS_PER_TAB channels per tab.
    for k in 0..=MAX_CHANNELS_PER_TAB {
        let body = TabMessage::Subscribe {
            channel: format!("c:{k}"),
            since: None,
        };
        l.handle(post(id("f"), body), 1.0);
    }
    assert_eq!(subscribes(&drain(&mut l)), MAX_CHANNELS_PER_TAB);
    // At most MAX_PUBLISHES_PER_TAB unanswered publishes per tab.
    for k in 0..=MAX_PUBLISHES_PER_TAB {
        let body = TabMessage::Publish {
            channel: CH.into(),
            id: format!("{k:032x}"),
            data: RawJson::parse("1").unwrap(),
        };
        l.handle(post(id("f"), body), 1.0);
    }
    let published = calls(&drain(&mut l))
        .iter()
        .filter(|c| matches!(c, SocketCall::Publish { .. }))
        .count();
    assert_eq!(published, MAX_PUBLISHES_PER_TAB);

    // A follower believes channel news only from its leader.
    let (mut l, mut f) = pair(true);
    f.subscribe(CH, 7, None).unwrap();
    settle(&mut [&mut l, &mut f], 1.0);
    let server = |to: Option<TabId>, frame: &str| TabMessage::Server {
        to,
        frame: RawJson::parse(frame).unwrap(),
    };
    for body in [
        server(
            None,
            r#"{"type":"subscribed","channel":"chat:a","epoch":"e","offset":0}"#,
        ),
        server(
            None,
            r#"{"type":"pub","channel":"chat:a","offset":1,"data":1}"#,
        ),
        TabMessage::ChannelTabs {
            channel: CH.into(),
            tabs: vec![],
        },
        server(
            Some(id("f")),
            &format!(
                r#"{{"type":"published","channel":"chat:a","offset":1,"id":"{}"}}"#,
                "0".repeat(32)
            ),
        ),
        server(
            Some(id("f")),
            r#"{"type":"presence","channel":"chat:a","clients":[],"id":"q1"}"#,
        ),
        server(
            None,
            r#"{"type":"join","channel":"chat:a","info":{"client_id":"x"}}"#,
        ),
    ] {
        f.handle(post(id("stranger"), body), 1.0);
    }
    assert!(drain(&mut f).is_empty(), "nothing delivered");
    assert_eq!(f.shared().channels[0].tabs, [id("f")], "replica unchanged");
    // Offsets at the edge of u64 neither panic nor wrap.
    report(
        &mut l,
        ChannelEvent::Subscribed { recovered: false },
        at(u64::MAX - 1),
    );
    for offset in [u64::MAX, u64::MAX, 0, 1] {
        report(&mut l, publication(offset), at(offset));
    }
    report(
        &mut l,
        ChannelEvent::Gap {
            from: 0,
            to: u64::MAX,
        },
        at(u64::MAX),
    );
    let out = settle(&mut [&mut l, &mut f], 1.0);
    assert_eq!(
        events(&out[1]),
        [
            (7, ChannelEvent::Subscribed { recovered: false }),
            (7, publication(u64::MAX)),
        ]
    );
}
