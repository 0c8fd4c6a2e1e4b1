//! The next leader: it resumes with every tab's window, catches up on its
//! predecessor's last broadcasts, steps down when its lock is stolen, and
//! hands messages back when a resume fails.

use super::*;

#[test]
fn the_next_leader_resumes_the_session_with_the_window_of_every_tab() {
    let (mut l, mut f) = pair(true);
    let step = |l: &mut Tabs, f: &mut Tabs, input: Input| {
        l.handle(input, 1.0);
        let effects = drain(l);
        relay(&effects, f, 1.0);
        drain(f);
    };
    let session = Session {
        id: "s1".into(),
        token: "t1".into(),
    };
    step(
        &mut l,
        &mut f,
        Input::Socket(SocketReport::Session(session.clone())),
    );
    l.send("l1").unwrap();
    for s in ["f1", "f2"] {
        f.send(s).unwrap();
        let forwarded = drain(&mut f);
        relay(&forwarded, &mut l, 1.0);
    }
    let effects = drain(&mut l);
    relay(&effects, &mut f, 1.0);
    for seq in 1..=3 {
        step(
            &mut l,
            &mut f,
            Input::Socket(SocketReport::Inbound {
                seq: Some(seq),
                frame: text(&format!("s{seq}")),
            }),
        );
    }
    // The server acknowledged l1 and f1.
    step(
        &mut l,
        &mut f,
        Input::Socket(SocketReport::Acked { seq: 2 }),
    );
    assert_eq!(f.outbox_len(), 1);
    let bye = {
        l.close();
        drain(&mut l)
    };
    assert_eq!(calls(&bye), [SocketCall::Release]);
    relay(&bye, &mut f, 2.0);
    f.handle(Input::LockAcquired, 2.0);
    let effects = drain(&mut f);
    let expected = Shared {
        session: Some(session),
        acked_seq: 2,
        last_in: 3,
        pending: [Pending {
            tab: id("f"),
            n: 2,
            frame: text("f2"),
        }]
        .into(),
        accepted: [(id("l"), 1), (id("f"), 2)].into(),
        channels: Vec::new(),
    };
    assert_eq!(
        calls(&effects),
        [SocketCall::Open {
            resume: Box::new(expected)
        }],
        "f2 is resent as seq 3, not handed over again"
    );
}

#[test]
fn a_new_leader_catches_up_on_the_old_ones_last_broadcasts_before_it_opens() {
    let (mut l, mut f) = pair(true);
    l.send("l1").unwrap();
    l.close();
    // The lock's grant overtakes the old leader's last broadcasts.
    let last_words = drain(&mut l);
    f.handle(Input::LockAcquired, 1.0);
    assert_eq!(f.role(), Role::Leader);
    assert!(
        drain(&mut f).is_empty(),
        "waits: no announcement, no socket"
    );
    assert_eq!(f.send("f1"), Ok(TabSend::Queued));
    // Others' sends wait for the announcement (they are resent then).
    f.handle(
        Input::Channel(Envelope {
            v: TAB_PROTOCOL,
            from: id("x"),
            body: TabMessage::Send {
                n: 1,
                frame: text("x1"),
            },
        }),
        1.0,
    );
    assert!(drain(&mut f).is_empty());
    relay(&last_words, &mut f, 2.0);
    let effects = drain(&mut f);
    let resume = Shared {
        pending: [Pending {
            tab: id("l"),
            n: 1,
            frame: text("l1"),
        }]
        .into(),
        accepted: [(id("l"), 1)].into(),
        ..Shared::default()
    };
    assert!(matches!(
        bodies(&effects)[0],
        TabMessage::Leader { epoch: 2, .. }
    ));
    assert_eq!(
        calls(&effects),
        [
            SocketCall::Open {
                resume: Box::new(resume)
            },
            SocketCall::Send(text("f1"))
        ],
        "l1 keeps seq 1, f1 comes after it"
    );

    // Closed while catching up: no socket to release.
    let (mut l, mut g) = pair(true);
    l.close();
    drain(&mut l);
    g.handle(Input::LockAcquired, 1.0);
    g.close();
    let effects = drain(&mut g);
    assert!(calls(&effects).is_empty());
    assert_eq!(effects.last(), Some(&Effect::ReleaseLock));

    // An old leader that died without a word: the catch-up ends after SILENCE_MS.
    let (mut l, mut f) = pair(false);
    drop(drain(&mut l));
    f.handle(Input::LockAcquired, 10.0);
    f.handle(Input::Tick, 11.0);
    assert!(calls(&drain(&mut f)).is_empty());
    f.handle(Input::Tick, 12.0 + SILENCE_MS);
    assert!(matches!(
        calls(&drain(&mut f))[..],
        [SocketCall::Open { .. }]
    ));
}

#[test]
fn a_tab_lines_up_for_the_lock_only_once_it_holds_the_leaders_state() {
    let (mut l, _) = pair(false);
    let mut g = Tabs::new(id("g"), &config(false));
    g.start();
    let hello = drain(&mut g);
    g.handle(Input::LockBusy, 1.0);
    assert!(drain(&mut g).is_empty(), "no state yet: not in line");
    relay(&hello, &mut l, 1.0);
    let answer = drain(&mut l);
    relay(&answer, &mut g, 1.0);
    assert!(drain(&mut g).contains(&Effect::RequestLock));
    assert_eq!(g.tabs(), 3);

    // No leader answers at all: in line after SILENCE_MS all the same.
    let mut h = Tabs::new(id("h"), &config(false));
    h.start();
    h.handle(Input::LockBusy, 0.0);
    h.handle(Input::Tick, 1.0);
    assert!(!drain(&mut h).contains(&Effect::RequestLock));
    h.handle(Input::Tick, 1.0 + SILENCE_MS);
    assert!(drain(&mut h).contains(&Effect::RequestLock));
}

#[test]
fn a_failed_resume_hands_each_tab_its_unconfirmed_and_the_rest_goes_on() {
    let (mut l, mut f) = pair(true);
    let forward = |l: &mut Tabs, f: &mut Tabs, s: &str| {
        f.send(s).unwrap();
        let sent = drain(f);
        relay(&sent, l, 1.0);
        let accepted = drain(l);
        relay(&accepted, f, 1.0);
    };
    forward(&mut l, &mut f, "f1");
    l.send("l1").unwrap();
    let accepted = drain(&mut l);
    relay(&accepted, &mut f, 1.0);
    forward(&mut l, &mut f, "f2");
    assert_eq!(f.shared().pending.len(), 3);

    let s2 = Session {
        id: "s2".into(),
        token: "t2".into(),
    };
    l.handle(
        Input::Socket(SocketReport::ResumeFailed {
            session: Some(s2.clone()),
            unconfirmed: 2,
        }),
        2.0,
    );
    let effects = drain(&mut l);
    assert!(effects.contains(&Effect::Deliver(TabEvent::Unconfirmed(vec![text("l1")]))));
    relay(&effects, &mut f, 2.0);
    assert_eq!(
        drain(&mut f),
        [Effect::Deliver(TabEvent::Unconfirmed(vec![text("f1")]))]
    );
    assert_eq!(f.outbox_len(), 1);
    assert_eq!(l.outbox_len(), 0);
    for tab in [&l, &f] {
        assert_eq!(tab.shared().session, Some(s2.clone()));
        assert_eq!(tab.shared().acked_seq, 0);
        assert_eq!(tab.shared().pending.len(), 1, "f2 goes out as seq 1");
    }
    l.handle(Input::Socket(SocketReport::Acked { seq: 1 }), 3.0);
    let confirmed = drain(&mut l);
    relay(&confirmed, &mut f, 3.0);
    assert_eq!(f.outbox_len(), 0);
}

#[test]
fn a_leader_whose_lock_was_stolen_steps_down_and_follows() {
    let (mut l, mut f) = pair(false);
    // f stopped hearing l and stole the lock; l was only slow.
    f.handle(Input::Tick, 2.0 * SILENCE_MS);
    assert!(drain(&mut f).contains(&Effect::StealLock));
    f.handle(Input::LockAcquired, 2.0 * SILENCE_MS);
    let takeover = drain(&mut f);
    assert!(matches!(calls(&takeover)[..], [SocketCall::Open { .. }]));
    relay(&takeover, &mut l, 2.0 * SILENCE_MS);
    assert_eq!(l.role(), Role::Follower);
    let effects = drain(&mut l);
    assert_eq!(calls(&effects), [SocketCall::Release]);
    assert!(effects.contains(&Effect::RequestLock), "in line again");
    assert_eq!(l.send("x"), Ok(TabSend::Forwarded));
}
