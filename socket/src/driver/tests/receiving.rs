//! Driver rules: receiving, errors, stats.

use super::*;

#[test]
fn messages_are_delivered_each_and_counted() {
    let mut h = Harness::new(config()).open();
    let effects = h.receive(text("a"));
    assert_eq!(events(&effects), [Event::Message(text("a"))]);
    h.receive(Message::Binary(vec![1, 2]));
    h.send("xyz").unwrap();
    h.now = 250.0;
    let stats = h.d.stats(h.now);
    assert_eq!(
        (
            stats.messages_received,
            stats.bytes_received,
            stats.messages_sent,
            stats.bytes_sent
        ),
        (2, 3, 1, 3)
    );
    assert_eq!(stats.uptime_ms, Some(250.0));
}

#[test]
fn a_transport_error_is_reported_typed() {
    let mut h = Harness::new(config()).open();
    let generation = h.generation();
    let effects = h.input(Input::Error {
        generation,
        error: "boom".into(),
    });
    assert_eq!(
        events(&effects),
        [Event::Error(TransportError::Socket("boom".into()))]
    );
}
