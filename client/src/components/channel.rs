//! The channel panel: subscribe to a channel, publish to it, its members
//! (live), and its feed (publications with their offsets, gap and reset
//! markers, joins and leaves, errors).

use std::collections::VecDeque;
use std::rc::Rc;

use buffered_socket::Presence;
use yew::prelude::*;

use super::{Field, Log, button, field, text_field};
use crate::console::{Line, member_text};

/// The channel name field.
const NAME: Field = Field::text("Channel", "channel-name");

/// The publish field.
const TEXT: Field = Field {
    placeholder: Some(r#"sent as {"text": …}"#),
    ..Field::text("Publish", "channel-text")
};

/// What [`channel_panel`] shows and asks.
pub struct ChannelPanel<'a> {
    /// The channel name field.
    pub name: &'a UseStateHandle<String>,
    /// The publish field.
    pub text: &'a UseStateHandle<String>,
    /// The channel subscribed to, if any.
    pub subscribed: Option<&'a str>,
    /// The channel's members while subscribed.
    pub members: Option<&'a Presence>,
    /// The feed, newest first.
    pub lines: &'a Rc<VecDeque<Line>>,
    /// Subscribe to the named channel (in place of the current one).
    pub on_subscribe: &'a Callback<String>,
    /// Drop the subscription.
    pub on_unsubscribe: &'a Callback<()>,
    /// Publish `(channel, text)`.
    pub on_publish: &'a Callback<(String, String)>,
}

/// The channel controls and feed.
pub fn channel_panel(props: ChannelPanel<'_>) -> Html {
    let (name, text) = (props.name, props.text);
    let subscribe = {
        let (name, on_subscribe) = (name.clone(), props.on_subscribe.clone());
        Callback::from(move |()| on_subscribe.emit(name.trim().to_owned()))
    };
    let publish = {
        let (name, text, on_publish) = (name.clone(), text.clone(), props.on_publish.clone());
        Callback::from(move |()| on_publish.emit((name.trim().to_owned(), (*text).clone())))
    };
    let status = match props.subscribed {
        Some(channel) => format!("subscribed to {channel}"),
        None => "not subscribed".to_owned(),
    };
    html! {
        <section class="panel channel">
            { field(&NAME, (**name).clone(), text_field(name)) }
            <div class="buttons">
                { button("subscribe", "Subscribe", &subscribe) }
                { button("unsubscribe", "Unsubscribe", props.on_unsubscribe) }
            </div>
            <span class="muted" data-testid="channel-status">{ status }</span>
            { field(&TEXT, (**text).clone(), text_field(text)) }
            { button("publish", "Publish", &publish) }
            if let Some(presence) = props.members {
                <div class="members">
                    <span class="muted">{ "members " }<b data-testid="member-count">{ presence.members.len() }</b>
                        if presence.truncated { { " (the server listed only these)" } }
                    </span>
                    <ul data-testid="members">
                        { for presence.members.iter().map(|m| html! { <li>{ member_text(m) }</li> }) }
                    </ul>
                </div>
            }
            <Log lines={props.lines.clone()} testid="channel-log" />
        </section>
    }
}
