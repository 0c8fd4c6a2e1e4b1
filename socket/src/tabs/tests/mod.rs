//! The coordinator's rules, one tab at a time, then several tabs and a
//! server simulated in-process with leaders closed mid-stream.
//!
//! | module | what |
//! |---|---|
//! | `mod.rs` | helpers: tabs, effects, relaying between two tabs |
//! | `tabs.rs` | one leader: the election, forwarding, a follower's queue, configs, counting, closing |
//! | `handoff.rs` | the next leader: resuming with every tab's window, catch-up, stolen locks, failed resumes |
//! | `channels.rs` | channels shared across tabs: references, release, delivery once per tab, resubscribe after a handoff, publish answers, forged posts |
//! | `presence.rs` | presence shared across tabs: queries asked by the leader and answered to their tab, joins and leaves to every subscribed tab, follows asked again at each `subscribed`, forged requests and answers |
//! | `validation.rs` | what a tab hears is checked: claims, replicas, sends, bounds, rejoining, other wire versions |
//! | `sim.rs` | several tabs and a reliable server simulated with leaders closed mid-stream |

use super::*;

mod channels;
mod handoff;
mod presence;
mod sim;
mod tabs;
mod validation;
use crate::config::Config;

fn config(reliable: bool) -> Config {
    Config::new("ws://127.0.0.1:1/ws").with_reliable(reliable)
}

/// A tab's id from a readable name (FNV-1a: distinct for the few names
/// the tests use, and never what a test means by another).
fn id(name: &str) -> TabId {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    TabId(hash)
}

fn drain(tab: &mut Tabs) -> Vec<Effect> {
    std::iter::from_fn(|| tab.poll_effect()).collect()
}

fn posted(effects: &[Effect]) -> Vec<Envelope> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(env) => Some(env.clone()),
            _ => None,
        })
        .collect()
}

fn bodies(effects: &[Effect]) -> Vec<TabMessage> {
    posted(effects).into_iter().map(|e| e.body).collect()
}

fn calls(effects: &[Effect]) -> Vec<SocketCall> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::DriveSocket(call) => Some(call.clone()),
            _ => None,
        })
        .collect()
}

fn text(s: &str) -> Frame {
    Frame::Text(s.into())
}

/// Feeds every broadcast of `effects` to `to`.
fn relay(effects: &[Effect], to: &mut Tabs, now: f64) {
    for env in posted(effects) {
        to.handle(Input::Channel(env), now);
    }
}

/// Runs `tabs` until none has an effect left, every broadcast reaching
/// every other tab, in order, as the JSON it posts (through the wire's
/// codec). Returns each tab's effects.
fn settle(tabs: &mut [&mut Tabs], now: f64) -> Vec<Vec<Effect>> {
    let mut all = vec![Vec::new(); tabs.len()];
    loop {
        let mut quiet = true;
        for i in 0..tabs.len() {
            let effects = drain(tabs[i]);
            if effects.is_empty() {
                continue;
            }
            quiet = false;
            for (j, other) in tabs.iter_mut().enumerate() {
                if j != i {
                    for env in posted(&effects) {
                        other.handle(Input::Posted(env.to_json()), now);
                    }
                }
            }
            all[i].extend(effects);
        }
        if quiet {
            return all;
        }
    }
}

/// The channel events delivered to a tab's app in `effects`, with their
/// serial.
fn events(effects: &[Effect]) -> Vec<(u64, crate::channel::ChannelEvent)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver(TabEvent::Channel { serial, event, .. }) => {
                Some((*serial, event.clone()))
            }
            _ => None,
        })
        .collect()
}

/// A leader `l` and a follower `f` that knows it.
fn pair(reliable: bool) -> (Tabs, Tabs) {
    let mut l = Tabs::new(id("l"), &config(reliable));
    let mut f = Tabs::new(id("f"), &config(reliable));
    l.start();
    l.handle(Input::LockAcquired, 0.0);
    drain(&mut l);
    f.start();
    let hello = drain(&mut f);
    relay(&hello, &mut l, 0.0);
    let answer = drain(&mut l);
    relay(&answer, &mut f, 0.0);
    let heartbeat = drain(&mut f);
    relay(&heartbeat, &mut l, 0.0);
    drain(&mut l);
    assert_eq!(f.role(), Role::Follower);
    assert!(f.has_leader());
    (l, f)
}

#[test]
fn tab_ids_are_nonzero_and_below_2_pow_31() {
    for random in [
        0,
        1,
        u64::MAX,
        0x8000_0000,
        0xffff_ffff_0000_0000,
        12_345_678_901,
    ] {
        let id = tab_id_from(random);
        assert!(id != 0 && id < 1 << 31, "{random:#x} gave {id:#x}");
    }
    assert_ne!(
        tab_id_from(1),
        tab_id_from(2 << 8),
        "different draws differ"
    );
}
