//! One leader: the election, forwarding, a follower's queue while no
//! leader exists, configs that differ, counting tabs and closing.

use super::*;

#[test]
fn envelopes_round_trip_and_other_versions_are_told_from_noise() {
    let env = Envelope {
        v: TAB_PROTOCOL,
        from: id("a"),
        body: TabMessage::Send {
            n: 3,
            frame: Frame::Binary(vec![1, 2]),
        },
    };
    let json = env.to_json();
    assert_eq!(Envelope::from_json(&json), Ok(env.clone()));
    let other = Envelope { v: 7, ..env };
    assert_eq!(
        Envelope::from_json(&other.to_json()),
        Err(WireError::OtherVersion { version: 7 })
    );
    // What the previous build (version 1) posts, verbatim.
    let v1 = r#"{"v":1,"from":"123","body":{"type":"hello","config":{"url":"ws://x/ws","reliable":true,"token":false}}}"#;
    assert_eq!(
        Envelope::from_json(v1),
        Err(WireError::OtherVersion { version: 1 })
    );
    // What the build before channels were shared (version 2) posts.
    let v2 = r#"{"v":2,"from":7,"body":{"type":"heartbeat"}}"#;
    assert_eq!(
        Envelope::from_json(v2),
        Err(WireError::OtherVersion { version: 2 })
    );
    // A build before any version field.
    let v0 = r#"{"from":"123","body":{"type":"heartbeat"}}"#;
    assert_eq!(
        Envelope::from_json(v0),
        Err(WireError::OtherVersion { version: 0 })
    );
    // Noise, and out-of-range values in this version: malformed, ignored.
    for noise in [
        "not json",
        "[1,2]",
        r#"{"hello":"world"}"#,
        r#"{"v":-1,"from":"a","body":{"type":"bye"}}"#,
        r#"{"v":4,"from":"a","body":{"type":"send","n":-3,"frame":{"kind":"text","data":"x"}}}"#,
        r#"{"v":4,"from":"a","body":{"type":"send","n":18446744073709551616,"frame":{"kind":"text","data":"x"}}}"#,
        r#"{"v":4,"from":"a","body":{"type":"unknown"}}"#,
    ] {
        assert_eq!(
            Envelope::from_json(noise),
            Err(WireError::Malformed),
            "{noise}"
        );
    }
}

#[test]
fn the_tab_granted_the_lock_leads_and_opens_the_socket() {
    let mut a = Tabs::new(id("a"), &config(true));
    a.start();
    let start = drain(&mut a);
    assert!(matches!(bodies(&start)[..], [TabMessage::Hello { .. }]));
    assert_eq!(start.last(), Some(&Effect::TryLock));
    // No leader yet: a send is kept.
    assert_eq!(a.send("early"), Ok(TabSend::Queued));
    assert_eq!(a.role(), Role::Follower);

    a.handle(Input::LockAcquired, 1.0);
    assert_eq!(a.role(), Role::Leader);
    let effects = drain(&mut a);
    assert!(matches!(
        bodies(&effects)[0],
        TabMessage::Leader {
            epoch: 1,
            tabs: 1,
            ..
        }
    ));
    // It opens from the shared state, then hands its own kept message over.
    assert_eq!(
        calls(&effects),
        [
            SocketCall::Open {
                resume: Box::default()
            },
            SocketCall::Send(text("early"))
        ]
    );
    assert!(effects.contains(&Effect::Deliver(TabEvent::Role {
        role: Role::Leader,
        tabs: 1
    })));
    // Reliable mode numbers text only, as the driver.
    assert_eq!(
        a.send(vec![1u8]),
        Err(SendError::BinaryNotReliable(Message::Binary(vec![1])))
    );
    // Its own sends go to the socket; they count until confirmed.
    assert_eq!(a.send("now"), Ok(TabSend::Sent));
    assert_eq!(a.outbox_len(), 2);
    a.handle(Input::Socket(SocketReport::Acked { seq: 2 }), 2.0);
    assert_eq!(a.outbox_len(), 0);
}

#[test]
fn a_follower_forwards_and_the_leader_shares_the_message_before_writing_it() {
    let (mut l, mut f) = pair(false);
    assert_eq!(l.tabs(), 2);
    assert_eq!(f.tabs(), 2);
    assert_eq!(f.send("hi"), Ok(TabSend::Forwarded));
    let forwarded = drain(&mut f);
    assert_eq!(
        bodies(&forwarded),
        [TabMessage::Send {
            n: 1,
            frame: text("hi")
        }]
    );
    relay(&forwarded, &mut l, 1.0);
    let effects = drain(&mut l);
    let accepted = Pending {
        tab: id("f"),
        n: 1,
        frame: text("hi"),
    };
    assert_eq!(
        effects,
        [
            Effect::Broadcast(Envelope {
                v: TAB_PROTOCOL,
                from: id("l"),
                body: TabMessage::Accepted(accepted.clone())
            }),
            Effect::DriveSocket(SocketCall::Send(text("hi"))),
        ],
        "every replica holds it before the server can see it"
    );
    relay(&effects, &mut f, 1.0);
    assert_eq!(f.shared().pending, [accepted]);
    assert_eq!(f.outbox_len(), 1, "counted until confirmed");

    l.handle(Input::Socket(SocketReport::Written), 2.0);
    let confirmed = drain(&mut l);
    assert_eq!(
        bodies(&confirmed),
        [TabMessage::Confirmed { tab: id("f"), n: 1 }]
    );
    relay(&confirmed, &mut f, 2.0);
    assert_eq!(f.outbox_len(), 0);
    assert!(f.shared().pending.is_empty());

    // Inbound messages reach every tab.
    l.handle(
        Input::Socket(SocketReport::Inbound {
            seq: None,
            frame: text("push"),
        }),
        3.0,
    );
    let inbound = drain(&mut l);
    assert!(inbound.contains(&Effect::Deliver(TabEvent::Message(text("push")))));
    relay(&inbound, &mut f, 3.0);
    assert_eq!(
        drain(&mut f),
        [Effect::Deliver(TabEvent::Message(text("push")))]
    );
}

#[test]
fn a_follower_queues_while_no_leader_exists_with_its_limits_and_resends_in_order() {
    let cfg = config(false).with_queue_capacity(3).with_queue_max_bytes(8);
    let mut f = Tabs::new(id("f"), &cfg);
    f.start();
    drain(&mut f);
    assert_eq!(f.send("a"), Ok(TabSend::Queued));
    assert_eq!(f.send("bb"), Ok(TabSend::Queued));
    assert_eq!(
        f.send("123456789"),
        Err(SendError::TooLarge("123456789".into()))
    );
    assert_eq!(f.send("cccccc"), Err(SendError::QueueFull("cccccc".into())));
    assert_eq!(f.send("ccc"), Ok(TabSend::Queued));
    assert_eq!(f.send("d"), Err(SendError::QueueFull("d".into())));
    assert!(
        drain(&mut f).is_empty(),
        "nothing is posted without a leader"
    );

    let mut l = Tabs::new(id("l"), &cfg);
    l.start();
    l.handle(Input::LockAcquired, 0.0);
    let announce = drain(&mut l);
    relay(&announce, &mut f, 1.0);
    let resent = drain(&mut f);
    let sends: Vec<(u64, Frame)> = bodies(&resent)
        .into_iter()
        .filter_map(|b| match b {
            TabMessage::Send { n, frame } => Some((n, frame)),
            _ => None,
        })
        .collect();
    assert_eq!(sends, [(1, text("a")), (2, text("bb")), (3, text("ccc"))]);
    // l never heard f's hello (posted before l existed): it takes nothing
    // from f and asks it to rejoin; f says hello once, however often asked.
    relay(&resent, &mut l, 1.0);
    let answer = drain(&mut l);
    assert!(
        calls(&answer).is_empty(),
        "nothing taken from an unknown tab"
    );
    let rejoin = TabMessage::Rejoin { tab: id("f") };
    assert_eq!(bodies(&answer), vec![rejoin; 4], "three sends, a heartbeat");
    relay(&answer, &mut f, 1.0);
    let hello = drain(&mut f);
    assert!(
        matches!(bodies(&hello)[..], [TabMessage::Hello { next: 1, .. }]),
        "{hello:?}"
    );
    relay(&hello, &mut l, 1.0);
    let announce = drain(&mut l);
    relay(&announce, &mut f, 1.0);
    let resent = bodies(&drain(&mut f));
    assert_eq!(
        resent
            .iter()
            .filter(|b| matches!(b, TabMessage::Send { .. }))
            .count(),
        3,
        "resent on the announcement that names f"
    );

    // The leader takes each once, in order: a duplicate is dropped, and a
    // message past a hole waits for the resend.
    let env = |n: u64, s: &str| {
        Input::Channel(Envelope {
            v: TAB_PROTOCOL,
            from: id("f"),
            body: TabMessage::Send { n, frame: text(s) },
        })
    };
    l.handle(env(2, "bb"), 2.0);
    l.handle(env(1, "a"), 2.0);
    l.handle(env(1, "a"), 2.0);
    l.handle(env(2, "bb"), 2.0);
    l.handle(env(3, "ccc"), 2.0);
    let written: Vec<SocketCall> = calls(&drain(&mut l));
    assert_eq!(
        written,
        [
            SocketCall::Send(text("a")),
            SocketCall::Send(text("bb")),
            SocketCall::Send(text("ccc"))
        ]
    );
    // Once written, a late duplicate is confirmed again (so its sender
    // releases it), not written again.
    l.handle(Input::Socket(SocketReport::Written), 3.0);
    drain(&mut l);
    l.handle(env(1, "a"), 4.0);
    let again = drain(&mut l);
    assert!(calls(&again).is_empty());
    assert_eq!(
        bodies(&again),
        [TabMessage::Confirmed { tab: id("f"), n: 1 }]
    );
}

#[test]
fn a_tab_whose_config_differs_goes_alone_with_what_it_kept() {
    let mut l = Tabs::new(id("l"), &config(false));
    l.start();
    l.handle(Input::LockAcquired, 0.0);
    drain(&mut l);
    let mut f = Tabs::new(id("f"), &config(true));
    f.start();
    let hello = drain(&mut f);
    assert_eq!(f.send("q"), Ok(TabSend::Queued));
    relay(&hello, &mut l, 1.0);
    let answer = drain(&mut l);
    assert_eq!(l.tabs(), 1, "not counted");
    relay(&answer, &mut f, 1.0);
    assert_eq!(f.role(), Role::Alone);
    let effects = drain(&mut f);
    assert!(effects.contains(&Effect::Deliver(TabEvent::ConfigMismatch {
        leader: TabConfig::of(&config(false))
    })));
    assert!(effects.contains(&Effect::ReleaseLock));
    assert_eq!(
        effects.last(),
        Some(&Effect::GoAlone {
            unsent: vec![text("q")]
        })
    );
    assert_eq!(f.send("x"), Err(SendError::Closed("x".into())));

    // The same from a leader's announcement heard directly.
    let mut g = Tabs::new(
        id("g"),
        &config(false).with_token(|| async { Ok::<_, std::io::Error>(String::new()) }),
    );
    g.start();
    drain(&mut g);
    let mut l2 = Tabs::new(id("l2"), &config(false));
    l2.handle(Input::LockAcquired, 0.0);
    let lead = drain(&mut l2);
    relay(&lead, &mut g, 3.0);
    assert_eq!(g.role(), Role::Alone);

    // No Web Locks or BroadcastChannel: alone too, nothing posted.
    let mut u = Tabs::new(id("u"), &config(false));
    u.handle(Input::Unsupported, 0.0);
    let effects = drain(&mut u);
    assert!(posted(&effects).is_empty());
    assert!(effects.contains(&Effect::Deliver(TabEvent::Unsupported)));
}

#[test]
fn tabs_are_counted_and_a_silent_leader_is_replaced() {
    let (mut l, mut f) = pair(false);
    assert_eq!(l.tabs(), 2);
    // A follower not heard for SILENCE_MS drops out of the count.
    l.handle(Input::Tick, SILENCE_MS + 1.0);
    assert_eq!(l.tabs(), 1);
    let status = drain(&mut l);
    assert!(status.contains(&Effect::Deliver(TabEvent::Role {
        role: Role::Leader,
        tabs: 1
    })));
    relay(&status, &mut f, SILENCE_MS + 1.0);
    assert_eq!(f.tabs(), 1);
    drain(&mut f);
    // The leader heard recently: nothing; silent too long: steal the lock.
    f.handle(Input::Tick, SILENCE_MS + 2.0);
    assert!(!drain(&mut f).contains(&Effect::StealLock));
    f.handle(Input::Tick, 2.0 * SILENCE_MS + 2.0);
    assert!(drain(&mut f).contains(&Effect::StealLock));
    assert!(!f.has_leader());
    assert_eq!(f.send("wait"), Ok(TabSend::Queued));
}

#[test]
fn a_follower_leaves_with_what_no_leader_took_and_the_last_leader_closes() {
    let (mut l, mut f) = pair(false);
    f.send("a").unwrap();
    let forwarded = drain(&mut f);
    relay(&forwarded, &mut l, 1.0);
    let accepted = drain(&mut l);
    relay(&accepted, &mut f, 1.0);
    // The leader is gone; the next message waits; the tab closes.
    let bye = Envelope {
        v: TAB_PROTOCOL,
        from: id("l"),
        body: TabMessage::Bye,
    };
    f.handle(Input::Channel(bye), 2.0);
    assert_eq!(f.send("b"), Ok(TabSend::Queued));
    // "a" was accepted: the next leader sends it. "b" never was.
    assert_eq!(f.close(), [text("b")]);
    let effects = drain(&mut f);
    assert!(matches!(bodies(&effects)[..], [TabMessage::Bye]));
    assert_eq!(effects.last(), Some(&Effect::ReleaseLock));
    assert_eq!(f.send("c"), Err(SendError::Closed("c".into())));

    relay(&effects, &mut l, 3.0);
    assert_eq!(l.tabs(), 1);
    drain(&mut l);
    assert!(l.close().is_empty());
    assert_eq!(calls(&drain(&mut l)), [SocketCall::Close]);

    // With a follower left, the leader's close hands the socket over.
    let (mut l, _f) = pair(false);
    l.close();
    assert_eq!(calls(&drain(&mut l)), [SocketCall::Release]);
}
