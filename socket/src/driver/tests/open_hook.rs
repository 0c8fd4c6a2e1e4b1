//! Driver rules: the open hook.

use super::*;

#[test]
fn the_open_hook_runs_before_the_flush_and_its_sends_go_first() {
    let mut h = Harness::new(config().with_queue_capacity(1));
    h.d.set_open_hook(true);
    h.start();
    h.send("queued").unwrap();
    let effects = h.opened();
    let generation = h.generation();
    assert_eq!(effects.last(), Some(&Effect::RunOpenHook { generation }));
    assert!(writes(&effects).is_empty());
    assert!(
        events(&effects).is_empty(),
        "the step's events wait for the hook"
    );
    // The hook sends, even though the queue is full.
    assert_eq!(h.send("auth"), Ok(SendOutcome::Sent));
    h.d.open_hook_done(generation);
    let effects = h.effects();
    assert_eq!(writes(&effects), [text("auth"), text("queued")]);
    assert_eq!(
        events(&effects),
        [Event::StateChanged(State::Open), Event::Open]
    );
}

#[test]
fn a_hook_that_closes_leaves_the_queue_for_the_next_open() {
    let mut h = Harness::new(config());
    h.d.set_open_hook(true);
    h.start();
    h.send("queued").unwrap();
    h.opened();
    let generation = h.generation();
    h.d.close(NORMAL, "from the hook", 0.0).unwrap();
    h.d.open_hook_done(generation);
    let effects = h.effects();
    assert!(writes(&effects).is_empty());
    assert!(!events(&effects).contains(&Event::Open));
    assert_eq!(h.d.queue_len(), 1);
}

#[test]
fn a_stale_open_hook_done_does_nothing() {
    let mut h = Harness::new(config());
    h.d.set_open_hook(true);
    h.start();
    h.send("queued").unwrap();
    h.opened();
    let generation = h.generation();
    h.d.open_hook_done(generation + 5);
    assert!(h.effects().is_empty());
    h.d.open_hook_done(generation);
    assert_eq!(writes(&h.effects()), [text("queued")]);
    // Only once.
    h.d.open_hook_done(generation);
    assert!(h.effects().is_empty());
}

#[test]
fn sends_during_a_pending_hook_are_not_blocked_by_the_queue_but_after_it_they_queue() {
    let mut h = Harness::new(config());
    h.d.set_open_hook(true);
    h.start();
    h.send("q1").unwrap();
    h.opened();
    let generation = h.generation();
    h.d.open_hook_done(generation);
    h.effects();
    // Open, queue empty again: a send is written at once.
    assert_eq!(h.send("after"), Ok(SendOutcome::Sent));
}
