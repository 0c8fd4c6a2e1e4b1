//! The channel panel: subscribe to a channel, publish to it, its members
//! (live), and its feed (publications with their offsets, gap and reset
//! markers, joins and leaves, errors).

use std::collections::VecDeque;
use std::rc::Rc;

use buffered_socket::Presence;
use yew::prelude::*;

use super::{Log, text_field};
use crate::console::{Line, member_text};

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
    let (on_name, on_name_change) = text_field(name);
    let (on_text, on_text_change) = text_field(text);
    let subscribe = {
        let (name, on_subscribe) = (name.clone(), props.on_subscribe.clone());
        Callback::from(move |_| on_subscribe.emit(name.trim().to_owned()))
    };
    let unsubscribe = props.on_unsubscribe.reform(|_: MouseEvent| ());
    let publish = {
        let (name, text, on_publish) = (name.clone(), text.clone(), props.on_publish.clone());
        Callback::from(move |_| on_publish.emit((name.trim().to_owned(), (*text).clone())))
    };
    let status = match props.subscribed {
        Some(channel) => format!("subscribed to {channel}"),
        None => "not subscribed".to_owned(),
    };
    html! {
        <section class="panel channel">
            <label class="grow">{ "Channel" }
                <input data-testid="channel-name" type="text" value={(**name).clone()} oninput={on_name}
                    onchange={on_name_change} />
            </label>
            <div class="buttons">
                <button data-testid="subscribe" onclick={subscribe}>{ "Subscribe" }</button>
                <button data-testid="unsubscribe" onclick={unsubscribe}>{ "Unsubscribe" }</button>
            </div>
            <span class="muted" data-testid="channel-status">{ status }</span>
            <label class="grow">{ "Publish" }
                <input data-testid="channel-text" type="text" placeholder={r#"sent as {"text": …}"#}
                    value={(**text).clone()} oninput={on_text} onchange={on_text_change} />
            </label>
            <button data-testid="publish" onclick={publish}>{ "Publish" }</button>
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
