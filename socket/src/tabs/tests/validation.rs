//! What a tab hears is checked (issue 22): claims to lead, replicas, sends
//! from tabs that never said hello or past their bound, frames the mode
//! cannot carry, tabs forgotten and rejoining, other wire versions.

use super::*;

/// `name`'s `body`, as the channel brings it.
fn heard(name: &str, body: TabMessage) -> Input {
    Input::Channel(Envelope {
        v: TAB_PROTOCOL,
        from: id(name),
        body,
    })
}

fn claim(epoch: u64, cfg: &Config, shared: Shared, roster: &[&str]) -> TabMessage {
    TabMessage::Leader {
        epoch,
        config: TabConfig::of(cfg),
        shared,
        tabs: 9,
        state: LinkState::Open,
        roster: roster.iter().map(|name| id(name)).collect(),
    }
}

fn hello(cfg: &Config, next: u64) -> TabMessage {
    TabMessage::Hello {
        config: TabConfig::of(cfg),
        next,
    }
}

fn forged_shared() -> Shared {
    Shared {
        last_in: u64::MAX,
        acked_seq: u64::MAX,
        accepted: [(id("f"), u64::MAX)].into(),
        ..Shared::default()
    }
}

/// The epoch `tab` announces, making it announce.
fn epoch_of(effects: &[Effect]) -> Option<u64> {
    bodies(effects).into_iter().find_map(|b| match b {
        TabMessage::Leader { epoch, .. } => Some(epoch),
        _ => None,
    })
}

#[test]
fn claims_at_u64_max_far_ahead_or_from_a_tab_that_never_said_hello_are_ignored() {
    let cfg = config(true);
    let (mut l, mut f) = pair(true);
    let before = f.shared().clone();
    for (from, epoch) in [("x", u64::MAX), ("x", 2), ("f", u64::MAX), ("f", 7)] {
        let forged = heard(from, claim(epoch, &cfg, forged_shared(), &["x"]));
        l.handle(forged.clone(), 1.0);
        f.handle(forged, 1.0);
        assert_eq!(l.role(), Role::Leader, "{from} at {epoch}");
        assert!(calls(&drain(&mut l)).is_empty(), "{from} at {epoch}");
        assert_eq!(f.shared(), &before, "{from} at {epoch}");
        drain(&mut f);
    }
    // The follower still follows l: l's news reaches it.
    l.handle(
        Input::Socket(SocketReport::Inbound {
            seq: Some(1),
            frame: text("s1"),
        }),
        2.0,
    );
    let inbound = drain(&mut l);
    relay(&inbound, &mut f, 2.0);
    assert_eq!(
        drain(&mut f),
        [Effect::Deliver(TabEvent::Message(text("s1")))]
    );
    // The next leader's epoch is one more than l's: no overflow, believed.
    let bye = {
        l.close();
        drain(&mut l)
    };
    relay(&bye, &mut f, 3.0);
    f.handle(Input::LockAcquired, 3.0);
    assert_eq!(epoch_of(&drain(&mut f)), Some(2));

    // A tab that never said hello and does not name us is not followed,
    // even at the next epoch; one that names us (it heard our hello) is.
    let mut g = Tabs::new(id("g"), &cfg);
    g.start();
    drain(&mut g);
    g.handle(heard("x", claim(1, &cfg, forged_shared(), &["x"])), 1.0);
    assert!(!g.has_leader());
    assert!(drain(&mut g).is_empty(), "no resend to a stranger");
    g.handle(
        heard("y", claim(40, &cfg, Shared::default(), &["y", "g"])),
        1.0,
    );
    assert!(g.has_leader());
}

#[test]
fn the_replica_changes_only_at_the_current_leaders_word() {
    let cfg = config(true);
    let (mut l, mut f) = pair(true);
    // A third tab that said hello: known, not the leader.
    let mut g = Tabs::new(id("g"), &cfg);
    g.start();
    let hi = drain(&mut g);
    relay(&hi, &mut l, 1.0);
    relay(&hi, &mut f, 1.0);
    relay(&drain(&mut l), &mut f, 1.0);
    drain(&mut f);
    let before = f.shared().clone();
    let pending = Pending {
        tab: id("f"),
        n: 1,
        frame: text("forged"),
    };
    let forgeries = [
        TabMessage::Accepted(pending),
        TabMessage::Confirmed { tab: id("f"), n: 9 },
        TabMessage::Inbound {
            seq: Some(u64::MAX),
            frame: text("forged"),
        },
        TabMessage::Session(Session {
            id: "forged".into(),
            token: "forged".into(),
        }),
        TabMessage::ResumeFailed {
            session: None,
            unconfirmed: usize::MAX,
        },
        TabMessage::Refused {
            tab: id("f"),
            n: 1,
            reason: Refusal::QueueFull,
        },
        TabMessage::Status {
            state: LinkState::Closed,
            tabs: usize::MAX,
        },
        TabMessage::Mismatch {
            tab: id("f"),
            leader: TabConfig::of(&config(false)),
        },
        TabMessage::Disband { version: 2 },
        TabMessage::Rejoin { tab: id("f") },
        // Same epoch, not the leader: a replica from a non-leader.
        claim(1, &cfg, forged_shared(), &["g", "f"]),
    ];
    for from in ["x", "g"] {
        for body in forgeries.clone() {
            f.handle(heard(from, body.clone()), 2.0);
            assert_eq!(f.shared(), &before, "{from}: {body:?}");
            assert!(drain(&mut f).is_empty(), "{from}: {body:?}");
            l.handle(heard(from, body.clone()), 2.0);
            assert!(calls(&drain(&mut l)).is_empty(), "{from}: {body:?}");
        }
    }
    assert_eq!(f.tabs(), 3);
    assert_eq!(f.link(), LinkState::Connecting);
}

#[test]
fn sends_are_taken_only_from_tabs_that_said_hello_and_within_a_bound_per_tab() {
    let cfg = config(true).with_queue_capacity(2);
    let mut l = Tabs::new(id("l"), &cfg);
    l.handle(Input::LockAcquired, 0.0);
    drain(&mut l);
    let send = |n: u64, frame: Frame| TabMessage::Send { n, frame };

    // A stranger: nothing taken, told to rejoin.
    l.handle(heard("x", send(1, text("x1"))), 1.0);
    let effects = drain(&mut l);
    assert!(calls(&effects).is_empty());
    assert_eq!(bodies(&effects), [TabMessage::Rejoin { tab: id("x") }]);
    assert!(l.shared().accepted.is_empty());

    // Said hello: taken, up to the bound; past it, refused back to the
    // tab, its number used, nothing queued.
    l.handle(heard("x", hello(&cfg, 1)), 1.0);
    drain(&mut l);
    l.handle(heard("x", send(1, text("x1"))), 2.0);
    l.handle(heard("x", send(2, text("x2"))), 2.0);
    l.handle(heard("x", send(3, text("x3"))), 2.0);
    l.handle(heard("x", send(4, Frame::Binary(vec![4]))), 2.0);
    let effects = drain(&mut l);
    assert_eq!(
        calls(&effects),
        [SocketCall::Send(text("x1")), SocketCall::Send(text("x2"))]
    );
    let refused: Vec<TabMessage> = bodies(&effects)
        .into_iter()
        .filter(|b| matches!(b, TabMessage::Refused { .. }))
        .collect();
    assert_eq!(
        refused,
        [
            TabMessage::Refused {
                tab: id("x"),
                n: 3,
                reason: Refusal::QueueFull
            },
            TabMessage::Refused {
                tab: id("x"),
                n: 4,
                reason: Refusal::BinaryNotReliable
            },
        ]
    );
    assert_eq!(l.shared().pending.len(), 2);
    // Room again once one is acknowledged: the next number is taken.
    l.handle(Input::Socket(SocketReport::Acked { seq: 1 }), 3.0);
    drain(&mut l);
    l.handle(heard("x", send(5, text("x5"))), 3.0);
    assert_eq!(calls(&drain(&mut l)), [SocketCall::Send(text("x5"))]);
}

#[test]
fn a_refused_message_comes_back_to_its_tab_and_binary_is_refused_before_forwarding() {
    // The follower's own bound is larger than the leader's per-tab bound.
    let mut l = Tabs::new(id("l"), &config(true).with_queue_capacity(1));
    let mut f = Tabs::new(id("f"), &config(true).with_queue_capacity(10));
    l.start();
    l.handle(Input::LockAcquired, 0.0);
    relay(&drain(&mut l), &mut f, 0.0);
    f.start();
    relay(&drain(&mut f), &mut l, 0.0);
    relay(&drain(&mut l), &mut f, 0.0);
    drain(&mut f);
    assert!(f.has_leader());

    assert_eq!(
        f.send(vec![1u8]),
        Err(SendError::BinaryNotReliable(Message::Binary(vec![1])))
    );
    assert!(drain(&mut f).is_empty(), "refused before it is forwarded");

    f.send("a").unwrap();
    f.send("b").unwrap();
    relay(&drain(&mut f), &mut l, 1.0);
    let answer = drain(&mut l);
    assert_eq!(calls(&answer), [SocketCall::Send(text("a"))]);
    relay(&answer, &mut f, 1.0);
    assert_eq!(
        drain(&mut f),
        [Effect::Deliver(TabEvent::Refused {
            frame: text("b"),
            reason: Refusal::QueueFull
        })]
    );
    assert_eq!(f.outbox_len(), 1, "b is gone, a waits for its ack");
    assert_eq!(f.shared().accepted.get(&id("f")), Some(&2));
    // After a's ack, c is the next number: not past a hole.
    l.handle(Input::Socket(SocketReport::Acked { seq: 1 }), 2.0);
    relay(&drain(&mut l), &mut f, 2.0);
    f.send("c").unwrap();
    relay(&drain(&mut f), &mut l, 3.0);
    assert_eq!(calls(&drain(&mut l)), [SocketCall::Send(text("c"))]);
}

#[test]
fn a_tab_silent_past_forget_ms_is_forgotten_then_rejoins_and_loses_and_doubles_nothing() {
    let (mut l, mut f) = pair(false);
    // a: written and confirmed; b: accepted, not yet written.
    for s in ["a", "b"] {
        f.send(s).unwrap();
        relay(&drain(&mut f), &mut l, 1.0);
    }
    l.handle(Input::Socket(SocketReport::Written), 1.0);
    relay(&drain(&mut l), &mut f, 1.0);
    drain(&mut f);
    assert_eq!(f.outbox_len(), 1);

    // f's timers are throttled: nothing from it for over a minute. Its
    // pending b keeps its numbering; the roster forgets it.
    l.handle(Input::Tick, FORGET_MS + 2.0);
    let tick = drain(&mut l);
    assert_eq!(l.tabs(), 1);
    assert_eq!(l.shared().accepted.get(&id("f")), Some(&2));
    relay(&tick, &mut f, FORGET_MS + 2.0);
    drain(&mut f);

    // f speaks again (a send): told to rejoin, says hello, resends c only.
    f.send("c").unwrap();
    let mut written = Vec::new();
    let mut now = FORGET_MS + 3.0;
    for _ in 0..4 {
        relay(&drain(&mut f), &mut l, now);
        let answer = drain(&mut l);
        written.extend(calls(&answer));
        relay(&answer, &mut f, now);
        now += 1.0;
    }
    assert_eq!(
        written,
        [SocketCall::Send(text("c"))],
        "c once, b not again"
    );
    assert_eq!(l.tabs(), 2);
    for _ in 0..2 {
        l.handle(Input::Socket(SocketReport::Written), now);
    }
    relay(&drain(&mut l), &mut f, now);
    assert_eq!(f.outbox_len(), 0, "b and c confirmed");

    // Silent again with nothing pending: its numbering is forgotten too,
    // and taken up from its hello.
    now += FORGET_MS + 1.0;
    l.handle(Input::Tick, now);
    assert_eq!(l.shared().accepted.get(&id("f")), None);
    relay(&drain(&mut l), &mut f, now);
    drain(&mut f);
    f.send("d").unwrap();
    let mut written = Vec::new();
    for _ in 0..4 {
        relay(&drain(&mut f), &mut l, now);
        let answer = drain(&mut l);
        written.extend(calls(&answer));
        relay(&answer, &mut f, now);
    }
    assert_eq!(written, [SocketCall::Send(text("d"))]);
    assert_eq!(l.shared().accepted.get(&id("f")), Some(&4));
}

#[test]
fn per_tab_state_goes_with_the_tabs_goodbye() {
    let cfg = config(false);
    let mut l = Tabs::new(id("l"), &cfg);
    l.handle(Input::LockAcquired, 0.0);
    for i in 0..50 {
        let name = format!("t{i}");
        l.handle(heard(&name, hello(&cfg, 1)), 1.0);
        l.handle(
            heard(
                &name,
                TabMessage::Send {
                    n: 1,
                    frame: text(&name),
                },
            ),
            1.0,
        );
        if i % 2 == 0 {
            l.handle(Input::Socket(SocketReport::Written), 1.0);
        }
        l.handle(heard(&name, TabMessage::Bye), 1.0);
    }
    drain(&mut l);
    // The odd tabs' messages are still pending: their numbering stays.
    assert_eq!(l.shared().accepted.len(), 25);
    for _ in 0..25 {
        l.handle(Input::Socket(SocketReport::Written), 2.0);
    }
    assert!(l.shared().pending.is_empty());
    assert!(l.shared().accepted.is_empty());
    assert_eq!(l.tabs(), 1);
}

#[test]
fn numbers_at_the_edges_neither_panic_nor_wrap() {
    let cfg = config(true);
    let (mut l, mut f) = pair(true);
    for body in [
        hello(&cfg, 0),
        hello(&cfg, u64::MAX),
        TabMessage::Send {
            n: 0,
            frame: text("zero"),
        },
        TabMessage::Send {
            n: u64::MAX,
            frame: text("max"),
        },
        TabMessage::Send {
            n: u64::MAX,
            frame: text("max again"),
        },
    ] {
        l.handle(heard("x", body), 1.0);
    }
    let effects = drain(&mut l);
    // x's numbering starts at u64::MAX: that one is taken, nothing after.
    assert_eq!(calls(&effects), [SocketCall::Send(text("max"))]);
    relay(&effects, &mut f, 1.0);
    drain(&mut f);
    l.handle(
        heard(
            "x",
            TabMessage::Send {
                n: 0,
                frame: text("wrapped"),
            },
        ),
        2.0,
    );
    assert!(calls(&drain(&mut l)).is_empty());
    // The leader's own word at the edges: applied, saturating.
    for body in [
        TabMessage::Confirmed {
            tab: id("x"),
            n: u64::MAX,
        },
        TabMessage::ResumeFailed {
            session: None,
            unconfirmed: usize::MAX,
        },
        TabMessage::Status {
            state: LinkState::Open,
            tabs: usize::MAX,
        },
    ] {
        f.handle(heard("l", body), 3.0);
    }
    assert_eq!(f.tabs(), usize::MAX);
    assert!(f.shared().pending.is_empty());
}

#[test]
fn a_tab_that_hears_another_wire_version_goes_alone_and_says_why() {
    let v1 = r#"{"v":1,"from":"old","body":{"type":"heartbeat"}}"#.to_owned();
    let (mut l, mut f) = pair(true);
    f.send("f1").unwrap();
    relay(&drain(&mut f), &mut l, 1.0);
    relay(&drain(&mut l), &mut f, 1.0);
    f.send("f2").unwrap();
    drain(&mut f);

    // Noise changes nothing.
    for noise in ["", "{}", "null", r#"{"v":"2"}"#] {
        f.handle(Input::Posted(noise.into()), 2.0);
        l.handle(Input::Posted(noise.into()), 2.0);
    }
    assert!(drain(&mut f).is_empty() && drain(&mut l).is_empty());

    // The follower waits for its leader's word, so that it knows what the
    // leader took; meanwhile it goes on as before.
    f.handle(Input::Posted(v1.clone()), 2.0);
    assert_eq!(f.role(), Role::Follower);
    assert!(drain(&mut f).is_empty());
    assert_eq!(f.send("f3"), Ok(TabSend::Forwarded));
    let late = drain(&mut f);

    // The leader: alone, keeping its socket (no release, no close), and
    // says so; f3 reaches it too late and is not taken.
    l.handle(Input::Posted(v1.clone()), 2.0);
    assert_eq!(l.role(), Role::Alone);
    relay(&late, &mut l, 2.0);
    let effects = drain(&mut l);
    assert!(calls(&effects).is_empty(), "its socket is its own now");
    assert_eq!(
        bodies(&effects),
        [TabMessage::Disband {
            version: u64::from(TAB_PROTOCOL)
        }]
    );
    assert!(effects.contains(&Effect::Deliver(TabEvent::OtherWire { version: 1 })));
    assert_eq!(effects.last(), Some(&Effect::GoAlone { unsent: vec![] }));
    assert_eq!(l.send("x"), Err(SendError::Closed("x".into())));

    // At that word the follower goes alone with what the leader did not
    // take (f2, f3); f1 is in the leader's socket: not handed back.
    relay(&effects, &mut f, 3.0);
    assert_eq!(f.role(), Role::Alone);
    let effects = drain(&mut f);
    assert!(effects.contains(&Effect::Deliver(TabEvent::OtherWire { version: 1 })));
    assert!(bodies(&effects).contains(&TabMessage::Bye));
    assert!(effects.contains(&Effect::ReleaseLock));
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Deliver(TabEvent::Unconfirmed(_))))
    );
    assert_eq!(
        effects.last(),
        Some(&Effect::GoAlone {
            unsent: vec![text("f2"), text("f3")]
        })
    );

    // A follower whose leader falls silent instead goes alone on its tick;
    // one granted the lock meanwhile does not lead.
    let (_l, mut h) = pair(false);
    h.handle(Input::Posted(r#"{"from":"old","body":{}}"#.into()), 1.0);
    h.handle(Input::Tick, 2.0);
    assert_eq!(h.role(), Role::Follower);
    h.handle(Input::Tick, 2.0 + SILENCE_MS);
    assert_eq!(h.role(), Role::Alone);
    assert!(drain(&mut h).contains(&Effect::Deliver(TabEvent::OtherWire { version: 0 })));
    // The lock's grant may overtake the leader's `Disband`: the tab gives
    // the lock back and waits for that word.
    let (mut l, mut k) = pair(false);
    k.handle(Input::Posted(v1.clone()), 1.0);
    k.handle(Input::LockAcquired, 1.0);
    assert_eq!(k.role(), Role::Follower);
    assert_eq!(drain(&mut k), [Effect::ReleaseLock], "no socket opened");
    l.handle(Input::Posted(v1.clone()), 1.0);
    relay(&drain(&mut l), &mut k, 1.0);
    assert_eq!(k.role(), Role::Alone);

    // A follower in a handoff (no leader): what the old leader accepted
    // and nobody confirmed comes back as unconfirmed, the rest goes alone.
    let (mut l, mut g) = pair(true);
    g.send("g1").unwrap();
    relay(&drain(&mut g), &mut l, 1.0);
    relay(&drain(&mut l), &mut g, 1.0);
    l.close();
    relay(&drain(&mut l), &mut g, 2.0);
    g.send("g2").unwrap();
    drain(&mut g);
    g.handle(Input::Posted(v1), 3.0);
    assert_eq!(g.role(), Role::Alone, "no leader to wait for");
    let effects = drain(&mut g);
    assert!(effects.contains(&Effect::Deliver(TabEvent::Unconfirmed(vec![text("g1")]))));
    assert_eq!(
        effects.last(),
        Some(&Effect::GoAlone {
            unsent: vec![text("g2")]
        })
    );
}
