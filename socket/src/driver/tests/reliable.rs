//! Driver rules: reliable mode.

use super::*;

fn reliable() -> Harness {
    Harness::new(config().with_reliable(true))
}

/// A reliable driver, open, with session `s1` from the welcome.
fn reliable_open() -> Harness {
    let mut h = reliable().open();
    h.receive_server(&welcome("s1"));
    h.effects();
    h
}

#[test]
fn reliable_mode_starts_a_session_with_ack_0_and_numbers_sends() {
    let mut h = reliable();
    h.start();
    assert_eq!(h.send("a"), Ok(SendOutcome::Queued));
    let effects = h.opened();
    assert_eq!(client(&writes(&effects)), [ClientMessage::Ack { seq: 0 }]);
    // The welcome names the session: the queue goes out numbered under it.
    let effects = h.receive_server(&welcome("s1"));
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 1,
            data: "a".into()
        }]
    );
    assert_eq!(h.send("b"), Ok(SendOutcome::Sent));
    assert_eq!(
        client(&writes(&h.effects())),
        [ClientMessage::Msg {
            seq: 2,
            data: "b".into()
        }]
    );
    assert_eq!(h.d.stats(0.0).unacked, 2);
}

#[test]
fn reliable_frames_are_not_handed_back() {
    let mut h = reliable_open();
    h.send("a").unwrap();
    assert!(matches!(
        h.effects()[..],
        [Effect::Write {
            hand_back: false,
            ..
        }]
    ));
}

#[test]
fn reliable_mode_refuses_binary() {
    let mut h = reliable_open();
    assert_eq!(
        h.d.send(vec![1u8]),
        Err(SendError::BinaryNotReliable(Message::Binary(vec![1])))
    );
}

#[test]
fn unacknowledged_messages_count_against_the_queue_capacity() {
    let mut h = Harness::new(config().with_reliable(true).with_queue_capacity(2)).open();
    h.receive_server(&welcome("s1"));
    assert_eq!(h.send("a"), Ok(SendOutcome::Sent));
    assert_eq!(h.send("b"), Ok(SendOutcome::Sent));
    // Two kept: the window is full, so the third is refused rather than written.
    assert_eq!(h.send("c"), Err(SendError::QueueFull(text("c"))));
    h.receive_server(&ServerMessage::Ack { seq: 2 });
    assert_eq!(h.send("c"), Ok(SendOutcome::Sent));
    assert_eq!(h.d.stats(0.0).acked, 2);
}

#[test]
fn resume_order_is_resume_then_resend_then_hook_then_queue() {
    let mut h = reliable_open();
    h.d.set_open_hook(true);
    h.send("m1").unwrap();
    h.send("m2").unwrap();
    h.receive_server(&ServerMessage::Ack { seq: 1 });
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    // Sent while down: queued.
    assert_eq!(h.send("m3"), Ok(SendOutcome::Queued));
    let effects = h.opened();
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Resume {
            session: "s1".into(),
            token: "s1-token".into(),
            last_seq: 0
        }]
    );
    assert!(!has(
        &effects,
        &Effect::RunOpenHook {
            generation: h.generation()
        }
    ));
    // Waiting for the answer: new sends queue behind.
    assert_eq!(h.send("m4"), Ok(SendOutcome::Queued));
    let effects = h.receive_server(&ServerMessage::Resumed { last_seq: 1 });
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 2,
            data: "m2".into()
        }]
    );
    let generation = h.generation();
    assert_eq!(effects.last(), Some(&Effect::RunOpenHook { generation }));
    h.send("hook").unwrap();
    h.d.open_hook_done(generation);
    let effects = h.effects();
    let sent: Vec<String> = client(&writes(&effects))
        .into_iter()
        .map(|m| match m {
            ClientMessage::Msg { data, .. } => data,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, ["hook", "m3", "m4"]);
    assert_eq!(
        events(&effects),
        [Event::Resumed { resent: 1 }, Event::Open]
    );
}

#[test]
fn a_failed_resume_hands_the_unconfirmed_back_typed_then_flushes() {
    let mut h = reliable_open();
    h.send("m1").unwrap();
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    h.send("m2").unwrap();
    h.opened();
    h.receive_server(&welcome("s2"));
    let effects = h.receive_server(&ServerMessage::ResumeFailed {
        reason: ResumeFailure::UnknownSession,
    });
    assert_eq!(
        events(&effects),
        [
            Event::ResumeFailed {
                reason: ResumeFailure::UnknownSession,
                unconfirmed: vec![text("m1")]
            },
            Event::Open
        ]
    );
    // The queue flushes under the new session, numbered from 1.
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 1,
            data: "m2".into()
        }]
    );
}

#[test]
fn after_a_welcome_with_no_session_a_cut_fails_the_written_messages_with_no_session() {
    // A server that offers no session (its welcome has none): messages go
    // out after the welcome all the same, and a cut leaves nothing to resume.
    let mut h = reliable().open();
    h.receive_server(&ServerMessage::Welcome {
        client_id: "c".into(),
        push_interval_ms: 0,
        session: None,
        token: None,
        protocol: shared::PROTOCOL_VERSION,
        exp: None,
    });
    assert_eq!(h.send("m1"), Ok(SendOutcome::Sent));
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    let effects = h.opened();
    assert!(events(&effects).contains(&Event::ResumeFailed {
        reason: ResumeFailure::NoSession,
        unconfirmed: vec![text("m1")]
    }));
    assert_eq!(client(&writes(&effects)), [ClientMessage::Ack { seq: 0 }]);
}

#[test]
fn new_messages_wait_for_the_welcome_that_names_the_session() {
    // A first connection cut before its welcome (the native fault-injection
    // test's flake: under load the client's flush reached the proxy before
    // the server's welcome): nothing was numbered under a session nobody can
    // resume, so nothing comes back unconfirmed and nothing is lost.
    let mut h = reliable();
    h.start();
    assert_eq!(h.send("m1"), Ok(SendOutcome::Queued));
    let effects = h.opened();
    assert_eq!(client(&writes(&effects)), [ClientMessage::Ack { seq: 0 }]);
    assert!(!events(&effects).contains(&Event::Open));
    assert_eq!(h.send("m2"), Ok(SendOutcome::Queued));
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    let effects = h.opened();
    assert!(
        !events(&effects)
            .iter()
            .any(|e| matches!(e, Event::ResumeFailed { .. })),
        "{effects:?}"
    );
    assert_eq!(client(&writes(&effects)), [ClientMessage::Ack { seq: 0 }]);
    // The welcome names the session: the queue goes out under it, in order.
    let effects = h.receive_server(&welcome("s2"));
    assert_eq!(
        client(&writes(&effects)),
        [
            ClientMessage::Msg {
                seq: 1,
                data: "m1".into()
            },
            ClientMessage::Msg {
                seq: 2,
                data: "m2".into()
            }
        ]
    );
    assert_eq!(
        events(&effects),
        [Event::Message(text(&welcome("s2").to_json())), Event::Open]
    );
    assert_eq!(h.send("m3"), Ok(SendOutcome::Sent));
}

#[test]
fn an_ack_goes_out_after_32_messages_at_once() {
    let mut h = reliable_open();
    for seq in 1..ACK_EVERY {
        assert!(writes(&h.receive_server(&server_msg(seq, "x"))).is_empty());
    }
    assert_eq!(h.delay(TimerKind::Ack), Some(ACK_DELAY_MS.into()));
    let effects = h.receive_server(&server_msg(ACK_EVERY, "x"));
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Ack { seq: ACK_EVERY }]
    );
    assert!(has(&effects, &Effect::StopTimer(TimerKind::Ack)));
}

#[test]
fn the_ack_timer_acknowledges_what_arrived_since_the_last_ack() {
    let mut h = reliable_open();
    let effects = h.receive_server(&server_msg(1, "a"));
    assert_eq!(h.delay(TimerKind::Ack), Some(50));
    let first = h.timers[&TimerKind::Ack].0;
    // A second message does not restart the timer.
    let effects2 = h.receive_server(&server_msg(2, "b"));
    assert!(
        !effects2
            .iter()
            .any(|e| matches!(e, Effect::StartTimer { .. }))
    );
    assert_eq!(events(&effects), [Event::Message(text("a"))]);
    assert_eq!(h.timers[&TimerKind::Ack].0, first);
    let effects = h.fire(TimerKind::Ack);
    assert_eq!(client(&writes(&effects)), [ClientMessage::Ack { seq: 2 }]);
}

#[test]
fn server_messages_are_delivered_once_and_gaps_reported() {
    let mut h = reliable_open();
    let first = h.receive_server(&server_msg(1, "a"));
    assert_eq!(events(&first), [Event::Message(text("a"))]);
    assert!(events(&h.receive_server(&server_msg(1, "a"))).is_empty());
    let effects = h.receive_server(&ServerMessage::Gap { from: 2, to: 4 });
    assert_eq!(events(&effects), [Event::Gap { from: 2, to: 4 }]);
    let effects = h.receive_server(&server_msg(7, "g"));
    assert_eq!(
        events(&effects),
        [Event::Gap { from: 5, to: 6 }, Event::Message(text("g"))]
    );
    let stats = h.d.stats(0.0);
    assert_eq!((stats.gaps, stats.delivered), (2, 2));
}

#[test]
fn a_reliable_send_on_a_failed_socket_is_kept_for_the_resend() {
    let mut h = reliable_open();
    let generation = h.generation();
    h.send("a").unwrap();
    let effects = h.effects();
    // Not handed back (hand_back is false): the transport reports nothing,
    // and the socket closes. The message is resent after the resume.
    assert!(!effects.is_empty());
    h.closed(ABNORMAL);
    let _ = generation;
    h.fire(TimerKind::Retry);
    h.opened();
    let effects = h.receive_server(&ServerMessage::Resumed { last_seq: 0 });
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Msg {
            seq: 1,
            data: "a".into()
        }]
    );
}

#[test]
#[cfg(not(target_arch = "wasm32"))]
fn the_driver_can_move_to_another_thread() {
    // The native transport runs it on a multi-threaded runtime (in the
    // browser a token provider may hold `Rc`s, so there it is not `Send`).
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Driver>();
    send_sync::<Effect>();
    send_sync::<Input>();
}

#[test]
fn a_callback_that_sends_during_the_pump_is_served_after_the_current_effect() {
    // The glue's pump, with an application callback that uses the driver
    // re-entrantly: its effects join the same FIFO, nothing is dropped.
    let mut d = Driver::new(config(), 1);
    d.set_open_hook(true);
    d.start(0.0);
    d.send("queued").unwrap();
    let mut log = Vec::new();
    while let Some(effect) = d.poll_effect() {
        match effect {
            Effect::OpenSocket { generation, .. } => {
                d.handle(Input::Opened { generation }, 1.0);
            }
            Effect::RunOpenHook { generation } => {
                d.send("hook").unwrap();
                d.open_hook_done(generation);
            }
            Effect::Write { message, .. } => log.push(format!("write {message:?}")),
            Effect::Emit(Event::Open) => {
                log.push("open".into());
                assert_eq!(d.send("callback"), Ok(SendOutcome::Sent));
            }
            _ => {}
        }
    }
    assert_eq!(
        log,
        [
            r#"write Text("hook")"#,
            r#"write Text("queued")"#,
            "open",
            r#"write Text("callback")"#
        ]
    );
}

#[test]
fn a_restored_window_resumes_another_clients_session_with_its_seqs() {
    // Issue 15: a new leader tab carries on the session the old one left.
    let mut h = Harness::new(config().with_reliable(true).with_queue_capacity(3));
    h.d.restore_reliable(Reliable::restored(
        "s1".into(),
        "s1-token".into(),
        9,
        4,
        ["m5".to_owned(), "m6".to_owned()],
    ));
    h.start();
    // The window counts against the capacity: one more fits.
    assert_eq!(h.send("m7"), Ok(SendOutcome::Queued));
    assert_eq!(h.send("m8"), Err(SendError::QueueFull(text("m8"))));
    let effects = h.opened();
    assert_eq!(
        client(&writes(&effects)),
        [ClientMessage::Resume {
            session: "s1".into(),
            token: "s1-token".into(),
            last_seq: 9
        }]
    );
    h.receive_server(&welcome("s2"));
    let effects = h.receive_server(&ServerMessage::Resumed { last_seq: 4 });
    let seqs: Vec<(u64, String)> = client(&writes(&effects))
        .into_iter()
        .filter_map(|m| match m {
            ClientMessage::Msg { seq, data } => Some((seq, data)),
            _ => None,
        })
        .collect();
    assert_eq!(
        seqs,
        [(5, "m5".into()), (6, "m6".into()), (7, "m7".into())],
        "the resend keeps the old seqs, the queue follows"
    );
    assert_eq!(h.d.stats(0.0).unacked, 3);
}

#[test]
fn the_window_tells_the_seq_of_each_message_delivered_and_the_credentials() {
    // What a leader tab shares with the others (issue 15).
    let mut h = reliable_open();
    assert_eq!(
        h.d.reliable().and_then(Reliable::credentials),
        Some(("s1", "s1-token"))
    );
    h.receive_server(&server_msg(1, "a"));
    assert_eq!(h.d.reliable().map(Reliable::last_in), Some(1));
    let effects = h.receive_server(&server_msg(2, "b"));
    assert!(events(&effects).contains(&Event::Message(text("b"))));
    assert_eq!(h.d.reliable().map(Reliable::last_in), Some(2));
    assert!(Harness::new(config()).d.reliable().is_none());
}
