//! The channel panel's socket calls, through the wrapper's public channel
//! API as any app would use it: [`Socket::subscribe`] gives a [`Channel`]
//! whose events ([`Channel::on_event`]) fill the panel's feed and keep its
//! member list; dropping it unsubscribes; [`Socket::publish`] answers with
//! the offset.
//!
//! The member list: [`Channel::follow_presence`] has the socket ask the
//! server for the members after each (re)subscription, and the answer and
//! the joins and leaves after it come as the handle's events, which the
//! reducer applies with the wrapper's own rule (`Presence::apply`, what the
//! `FollowPresence` stream does). Its stream itself is not read: one event
//! callback keeps the feed and the list in one order, with no task to
//! spawn and end per subscription.
//!
//! [`Socket::subscribe`]: buffered_socket::Socket::subscribe
//! [`Socket::publish`]: buffered_socket::Socket::publish

use std::cell::RefCell;
use std::rc::Rc;

use buffered_socket::yew::use_socket;
use buffered_socket::{Channel, RawJson, Subscription};
use yew::prelude::*;

use crate::console::{Action, Console, Kind, Line};

/// What the channel panel can ask.
#[derive(Clone, PartialEq)]
pub struct ChannelCommands {
    /// Subscribes to the named channel, in place of the one subscribed to.
    pub subscribe: Callback<String>,
    /// Drops the subscription.
    pub unsubscribe: Callback<()>,
    /// Publishes `{"text": …}` to a channel: `(channel, text)`.
    pub publish: Callback<(String, String)>,
}

/// The one subscription: its handle and its callback's registration.
struct Held {
    channel: Channel,
    _events: Subscription,
}

/// The channel commands for the socket of the enclosing provider, made once
/// per socket (a new socket mounts a new page, and the old subscription is
/// dropped with it).
#[hook]
pub fn use_channel(log: UseReducerDispatcher<Console>) -> Rc<ChannelCommands> {
    let socket = use_socket().socket;
    use_memo((), move |()| {
        let held: Rc<RefCell<Option<Held>>> = Rc::default();
        let line = |kind, text| {
            Action::Channel(Line {
                at_ms: js_sys::Date::now(),
                kind,
                text,
            })
        };
        let unsubscribe = {
            let (held, log) = (held.clone(), log.clone());
            Callback::from(move |()| {
                // Taken out first: dropping the handle calls into the socket.
                let old = held.borrow_mut().take();
                if let Some(old) = old {
                    let name = old.channel.name().to_owned();
                    drop(old);
                    log.dispatch(line(
                        Kind::Unsubscribed,
                        format!("unsubscribed from {name}"),
                    ));
                    log.dispatch(Action::Subscription(None));
                }
            })
        };
        let subscribe = {
            let (socket, log, unsubscribe) = (socket.clone(), log.clone(), unsubscribe.clone());
            Callback::from(move |name: String| {
                unsubscribe.emit(());
                match socket.subscribe(&name) {
                    Ok(channel) => {
                        log.dispatch(Action::Subscription(Some(name)));
                        let events = {
                            let log = log.clone();
                            channel.on_event(move |event| {
                                log.dispatch(Action::ChannelEvent(
                                    js_sys::Date::now(),
                                    event.clone(),
                                ));
                            })
                        };
                        // The members are fetched now and after every
                        // resubscription, for as long as the handle lives;
                        // they come as events (the stream is not needed).
                        drop(channel.follow_presence());
                        *held.borrow_mut() = Some(Held {
                            channel,
                            _events: events,
                        });
                    }
                    Err(err) => log.dispatch(line(Kind::Error, format!("not subscribed: {err}"))),
                }
            })
        };
        let publish = Callback::from(move |(channel, text): (String, String)| {
            // JSON.stringify quotes and escapes the text as a JSON string.
            let quoted = String::from(js_sys::JSON::stringify(&text.into()).unwrap_or_default());
            // Never refused (JSON.stringify wrote the string), and its
            // error is not formatted: serde_json's error texts and their
            // Display would come into the wasm for a case that cannot happen.
            let published = RawJson::parse(&format!("{{\"text\":{quoted}}}"))
                .map_err(|_| "the text is not JSON".to_owned())
                .and_then(|data| {
                    socket
                        .publish(&channel, data)
                        .map_err(|err| err.to_string())
                });
            match published {
                Ok(answer) => {
                    let log = log.clone();
                    yew::platform::spawn_local(async move {
                        let answer = answer.await;
                        log.dispatch(Action::Channel(Line::published(
                            js_sys::Date::now(),
                            &channel,
                            answer,
                        )));
                    });
                }
                Err(err) => log.dispatch(line(
                    Kind::Error,
                    format!("not published to {channel}: {err}"),
                )),
            }
        });
        ChannelCommands {
            subscribe,
            unsubscribe,
            publish,
        }
    })
}
