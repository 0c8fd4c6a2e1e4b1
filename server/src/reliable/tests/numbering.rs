//! Numbering, acknowledgement, the exactly-once filter and bursts.

use super::*;

on_both_stores!(
    sends_number_from_one_and_acks_release_them,
    each_client_seq_is_processed_once_and_in_order,
    a_reply_without_room_is_refused_and_its_message_not_processed,
    bursts_continue_where_they_stopped_and_end_with_done,
    pending_bursts_are_bounded,
);

async fn sends_number_from_one_and_acks_release_them(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(10));
    let s = first(&store).await;
    let mut s = lock(&s);
    let seqs: Vec<u64> = (1..=5)
        .map(|n| seq_of(&s.send(To::Connection(1), push(n), now).unwrap()))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(s.unacked(), 5);
    assert!(!s.window_open());
    s.ack(3);
    assert_eq!(s.unacked(), 2);
    assert!(s.window_open());
    // Acks beyond what was sent, or going backwards, change nothing wrong.
    s.ack(2);
    assert_eq!(s.unacked(), 2);
    s.ack(99);
    assert_eq!(s.unacked(), 0);
}

async fn each_client_seq_is_processed_once_and_in_order(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(10));
    let s = first(&store).await;
    let mut s = lock(&s);
    let mut served = Vec::new();
    let mut accept = |s: &mut Session, seq: u64| {
        s.accept(1, seq, now, |_| {
            served.push(seq);
            Some(echo(seq))
        })
        .unwrap()
    };
    assert!(matches!(accept(&mut s, 1), Accepted::Processed(Some(_))));
    assert!(matches!(accept(&mut s, 2), Accepted::Processed(Some(_))));
    assert_eq!(accept(&mut s, 2), Accepted::Duplicate);
    assert_eq!(accept(&mut s, 1), Accepted::Duplicate);
    assert_eq!(accept(&mut s, 4), Accepted::OutOfOrder { expected: 3 });
    assert!(matches!(accept(&mut s, 3), Accepted::Processed(Some(_))));
    assert_eq!(s.last_in(), 3);
    assert_eq!(served, [1, 2, 3]);
}

async fn a_reply_without_room_is_refused_and_its_message_not_processed(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(2));
    let s = first(&store).await;
    let mut s = lock(&s);
    for seq in 1..=2 {
        let accepted = s.accept(1, seq, now, |_| Some(echo(seq))).unwrap();
        assert!(matches!(accepted, Accepted::Processed(Some(_))));
    }
    assert_eq!(
        s.accept(1, 3, now, |_| Some(echo(3))).unwrap_err(),
        Refused::Full
    );
    assert_eq!(s.last_in(), 2);
    assert_eq!(s.unacked(), 2);
    // A refused push does not use up a push seq.
    assert_eq!(
        s.send(To::Connection(1), push(1), now).unwrap_err(),
        Refused::Full
    );
    s.ack(2);
    let frame = s.send(To::Connection(1), push(1), now).unwrap();
    assert_eq!(push_seq_of(&frame), 1);
    assert!(matches!(
        s.accept(1, 3, now, |_| Some(echo(3))).unwrap(),
        Accepted::Processed(Some(_))
    ));
}

async fn bursts_continue_where_they_stopped_and_end_with_done(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(10));
    let s = first(&store).await;
    let mut s = lock(&s);
    s.start_burst(2, now).unwrap();
    assert!(s.burst_ready());
    let mut got = Vec::new();
    while let Some(frame) = s.burst_step(1, 0, now).unwrap() {
        let ServerMessage::Msg { data, .. } = ServerMessage::from_json(&frame).unwrap() else {
            panic!("not a msg")
        };
        got.push(ServerMessage::from_json(&data).unwrap());
    }
    assert!(!s.burst_ready());
    assert!(matches!(got[0], ServerMessage::Push { seq: 1, .. }));
    assert!(matches!(got[1], ServerMessage::Push { seq: 2, .. }));
    assert!(matches!(got[2], ServerMessage::BurstDone { count: 2, .. }));
    assert_eq!(got.len(), 3);
}

async fn pending_bursts_are_bounded(kind: Kind) {
    let now = Instant::now();
    let store = kind.store(limits(10));
    let s = first(&store).await;
    let mut s = lock(&s);
    for _ in 0..MAX_PENDING_BURSTS {
        s.start_burst(5, now).unwrap();
    }
    assert_eq!(s.start_burst(5, now), Err(BurstBusy));
}
