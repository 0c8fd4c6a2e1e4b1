//! The runner's rules, natively: a socket that does not share passes
//! through to its driver; one that shares runs the adapter, judged by the
//! simulation of tabs over a server that speaks the real wire (`sim.rs`).

mod sim;

use super::{Runner, Step, TabIo};
use crate::config::Config;
use crate::driver::{Effect, Input};
use crate::message::{Event, Message, NotShared, SendOutcome, State};

fn steps(runner: &mut Runner) -> Vec<Step> {
    std::iter::from_fn(|| runner.next(0.0)).collect()
}

#[test]
fn without_sharing_the_runner_is_its_driver() {
    let mut runner = Runner::new(Config::new("ws://x/ws"), 1, 7);
    runner.start(0.0, false);
    let opened = steps(&mut runner);
    let Some(Step::Socket(Effect::OpenSocket { generation, .. })) = opened
        .iter()
        .find(|s| matches!(s, Step::Socket(Effect::OpenSocket { .. })))
    else {
        panic!("no open in {opened:?}")
    };
    let generation = *generation;
    assert_eq!(
        runner.send(Message::Text("a".into())),
        Ok(SendOutcome::Queued)
    );
    assert_eq!(runner.queue_len(), 1);
    runner.input(Input::Opened { generation }, 0.0);
    let steps = steps(&mut runner);
    assert!(steps.iter().any(|s| matches!(s, Step::Emit(Event::Open))));
    let Some(Step::Socket(Effect::Write {
        message, hand_back, ..
    })) = steps
        .iter()
        .find(|s| matches!(s, Step::Socket(Effect::Write { .. })))
    else {
        panic!("no write in {steps:?}")
    };
    assert_eq!((message, *hand_back), (&Message::Text("a".into()), true));
    assert_eq!(runner.state(), State::Open);
    assert!(!steps.iter().any(|s| matches!(s, Step::Tabs(_))));
}

#[test]
fn a_tab_whose_browser_cannot_share_goes_alone_with_its_own_socket() {
    let config = Config::new("ws://x/ws").with_shared_across_tabs("app");
    let mut runner = Runner::new(config, 1, 7);
    assert_eq!(
        runner.send(Message::Text("early".into())),
        Ok(SendOutcome::Queued)
    );
    runner.start(0.0, false);
    let steps = steps(&mut runner);
    let said = |want: &dyn Fn(&Step) -> bool| steps.iter().position(want);
    let alone = said(&|s| matches!(s, Step::Emit(Event::NotShared(NotShared::Unsupported))));
    let detach = said(&|s| matches!(s, Step::Tabs(TabIo::Detach)));
    let open = said(&|s| matches!(s, Step::Socket(Effect::OpenSocket { .. })));
    assert!(
        alone.is_some() && detach.is_some() && open.is_some(),
        "{steps:?}"
    );
    // The message sent before it knew goes on its own socket's queue.
    assert_eq!(runner.queue_len(), 1);
}

#[test]
fn while_sharing_the_queue_is_the_tabs_and_its_capacity_the_configs() {
    let config = Config::new("ws://x/ws")
        .with_shared_across_tabs("app")
        .with_queue_capacity(2);
    let mut runner = Runner::new(config, 1, 7);
    runner.start(0.0, true);
    let started = steps(&mut runner);
    assert!(started.contains(&Step::Tabs(TabIo::TryLock)), "{started:?}");
    runner.set_queue_capacity(1);
    assert_eq!(
        runner.send(Message::Text("a".into())),
        Ok(SendOutcome::Queued)
    );
    assert_eq!(
        runner.send(Message::Text("b".into())),
        Ok(SendOutcome::Queued)
    );
    assert_eq!(runner.queue_len(), 2);
    assert_eq!(runner.stats(0.0).queue_capacity, 2);
    // Leaving before any leader took them: both handed back, then detached.
    runner.close(1000, "bye", 0.0).expect("valid");
    let left = steps(&mut runner);
    assert_eq!(left.last(), Some(&Step::Tabs(TabIo::Detach)), "{left:?}");
    assert_eq!(
        runner.take_queued(),
        [Message::Text("a".into()), Message::Text("b".into())]
    );
    assert!(runner.next(0.0).is_none(), "detached once");
}

#[test]
fn a_shared_tab_subscribes_publishes_and_asks_presence_through_the_coordinator() {
    use crate::channel::{PresenceError, RawJson, SubscribeError};
    use crate::driver::Query;
    let config = Config::new("ws://x/ws").with_shared_across_tabs("app");
    let mut runner = Runner::new(config, 1, 7);
    runner.start(0.0, true);
    steps(&mut runner);
    // No leader known yet: kept for the first one.
    let serial = runner
        .subscribe("chat:a", None)
        .expect("channels are shared");
    assert!(serial > 1 << 40, "far from the driver's own serials");
    assert_eq!(
        runner.subscribe("chat:a", None),
        Err(SubscribeError::AlreadySubscribed("chat:a".into()))
    );
    let data = RawJson::parse("1").expect("json");
    let answer = Box::new(|_| {});
    assert_eq!(runner.publish("chat:a", data, 5, answer), Ok(1));
    // Presence is shared too: kept for the first leader, answered to this
    // tab; a name the server would refuse is refused at once.
    let query = Query::Stats(Box::new(|_| {}));
    assert_eq!(runner.presence_query("chat:a", query), Ok(()));
    let query = Query::Members(Box::new(|_| {}));
    assert!(matches!(
        runner.presence_query("no spaces", query),
        Err(PresenceError::Refused { .. })
    ));
    runner.unsubscribe("chat:a", serial);
    assert!(runner.subscribe("chat:a", None).is_ok(), "subscribed again");
}
