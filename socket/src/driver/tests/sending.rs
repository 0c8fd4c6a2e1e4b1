//! Driver rules: sending.

use super::*;

#[test]
fn sends_while_connecting_are_queued_and_flushed_in_order_on_open() {
    let mut h = Harness::new(config());
    h.start();
    assert_eq!(h.send("a"), Ok(SendOutcome::Queued));
    assert_eq!(h.send("b"), Ok(SendOutcome::Queued));
    assert!(writes(&h.effects()).is_empty());
    let effects = h.opened();
    assert_eq!(writes(&effects), [text("a"), text("b")]);
    assert_eq!(h.d.queue_len(), 0);
    // Events come after the writes.
    let first_event = effects
        .iter()
        .position(|e| matches!(e, Effect::Emit(_)))
        .unwrap();
    let last_write = effects
        .iter()
        .rposition(|e| matches!(e, Effect::Write { .. }))
        .unwrap();
    assert!(last_write < first_event);
}

#[test]
fn a_send_while_open_with_an_empty_queue_is_written_and_handed_back_on_failure() {
    let mut h = Harness::new(config()).open();
    assert_eq!(h.send("now"), Ok(SendOutcome::Sent));
    assert_eq!(
        h.effects(),
        [Effect::Write {
            generation: 1,
            message: text("now"),
            hand_back: true
        }]
    );
}

#[test]
fn binary_messages_go_out_as_binary() {
    let mut h = Harness::new(config()).open();
    assert_eq!(h.d.send(vec![1u8, 2, 3]), Ok(SendOutcome::Sent));
    assert_eq!(writes(&h.effects()), [Message::Binary(vec![1, 2, 3])]);
}

#[test]
fn a_send_after_close_fails_with_the_message() {
    let mut h = Harness::new(config()).open();
    h.d.close(NORMAL, "bye", 0.0).unwrap();
    assert_eq!(h.send("late"), Err(SendError::Closed(text("late"))));
}

#[test]
fn a_full_queue_rejects_the_new_message_and_gives_it_back() {
    let mut h = Harness::new(config().with_queue_capacity(2));
    h.start();
    h.send("a").unwrap();
    h.send("b").unwrap();
    assert_eq!(h.send("c"), Err(SendError::QueueFull(text("c"))));
    assert_eq!(h.d.queue_len(), 2);
}

#[test]
fn drop_oldest_makes_room_and_reports_each_drop() {
    let mut h = Harness::new(
        config()
            .with_queue_capacity(2)
            .with_overflow(Overflow::DropOldest),
    );
    h.start();
    h.effects();
    h.send("a").unwrap();
    h.send("b").unwrap();
    assert_eq!(h.send("c"), Ok(SendOutcome::Queued));
    assert_eq!(
        events(&h.effects()),
        [Event::Dropped {
            message: text("a"),
            reason: DropReason::Overflow
        }]
    );
    assert_eq!(h.d.stats(0.0).dropped, 1);
    assert_eq!(h.d.take_queued(), [text("b"), text("c")]);
}

#[test]
fn a_message_over_the_byte_limit_is_too_large() {
    let mut h = Harness::new(config().with_queue_max_bytes(3));
    h.start();
    assert_eq!(h.send("abcd"), Err(SendError::TooLarge(text("abcd"))));
}

#[test]
fn capacity_zero_never_queues() {
    let mut h = Harness::new(config().with_queue_capacity(0));
    h.start();
    assert_eq!(h.send("a"), Err(SendError::QueueFull(text("a"))));
    // Open, with nothing queued, it still sends.
    h.opened();
    assert_eq!(h.send("b"), Ok(SendOutcome::Sent));
}

#[test]
fn lowering_the_capacity_drops_the_newest_and_reports_them() {
    let mut h = Harness::new(config());
    h.start();
    h.effects();
    for m in ["a", "b", "c", "d"] {
        h.send(m).unwrap();
    }
    h.d.set_queue_capacity(2);
    assert_eq!(
        events(&h.effects()),
        [
            Event::Dropped {
                message: text("c"),
                reason: DropReason::CapacityLowered
            },
            Event::Dropped {
                message: text("d"),
                reason: DropReason::CapacityLowered
            }
        ]
    );
    let stats = h.d.stats(0.0);
    assert_eq!(
        (stats.queue_len, stats.queue_capacity, stats.dropped),
        (2, 2, 2)
    );
}

#[test]
fn take_queued_empties_the_queue_oldest_first() {
    let mut h = Harness::new(config());
    h.start();
    h.send("a").unwrap();
    h.send("b").unwrap();
    assert_eq!(h.d.take_queued(), [text("a"), text("b")]);
    assert_eq!(h.d.queue_len(), 0);
    assert!(writes(&h.opened()).is_empty());
}

#[test]
fn a_refused_write_goes_back_to_the_head_of_the_queue_in_order() {
    let mut h = Harness::new(config());
    h.start();
    for m in ["a", "b", "c"] {
        h.send(m).unwrap();
    }
    let generation = h.generation();
    let effects = h.opened();
    assert_eq!(writes(&effects).len(), 3);
    // The socket was closing: the transport hands the first two back.
    for m in ["a", "b"] {
        h.input(Input::WriteFailed {
            generation,
            message: text(m),
        });
    }
    // Later sends queue behind them rather than being written.
    assert_eq!(h.send("d"), Ok(SendOutcome::Queued));
    assert_eq!(h.d.stats(0.0).messages_sent, 1);
    h.closed(ABNORMAL);
    h.fire(TimerKind::Retry);
    assert_eq!(writes(&h.opened()), [text("a"), text("b"), text("d")]);
}

#[test]
fn writes_handed_back_after_their_socket_closed_keep_their_order() {
    let mut h = Harness::new(config());
    h.start();
    let generation = h.generation();
    h.opened();
    for m in ["a", "b", "c"] {
        assert_eq!(h.send(m), Ok(SendOutcome::Sent));
    }
    // The socket dies; its writes come back only afterwards, one by one.
    h.closed(ABNORMAL);
    assert_eq!(h.send("d"), Ok(SendOutcome::Queued));
    for m in ["a", "b", "c"] {
        h.input(Input::WriteFailed {
            generation,
            message: text(m),
        });
    }
    h.fire(TimerKind::Retry);
    assert_eq!(
        writes(&h.opened()),
        [text("a"), text("b"), text("c"), text("d")]
    );
}
