//! URL, token, connect and disconnect, and the connection state.

use buffered_socket::State;
use yew::prelude::*;

use super::{Check, Field, Listen, button, checkbox, field, input_value};
use crate::console::state_class;

/// The URL field.
const URL: Field = Field::text("URL", "url");

/// The token field.
const TOKEN: Field = Field {
    kind: "password",
    title: Some("token mode: a JWT sent as ?token= on every connect (empty: none)"),
    placeholder: Some("optional"),
    autocomplete: Some("off"),
    ..Field::text("Token", "token")
};

/// The reliable mode checkbox.
const RELIABLE: Check = Check {
    label: "reliable",
    testid: "reliable",
    class: "check",
    title: Some("acknowledged, resumable delivery: nothing lost across reconnects"),
};

/// The sharing checkbox.
const SHARE: Check = Check {
    label: "share across tabs",
    testid: "share-tabs",
    class: "check",
    title: Some(
        "one connection for all the console's tabs: a leader tab holds it, the others share it",
    ),
};

/// Properties of [`ConnectionBar`].
#[derive(Properties, PartialEq)]
pub struct ConnectionBarProps {
    /// The URL the socket uses now (the field starts with it).
    pub url: AttrValue,
    /// The socket's state (its name is the badge's class).
    pub state: State,
    /// The state as shown, with the countdown while reconnecting.
    pub status: AttrValue,
    /// Whether reliable mode is on.
    pub reliable: bool,
    /// Connect to the URL in the field, with the token in its field (empty:
    /// no token).
    pub on_connect: Callback<(String, String)>,
    /// Close for good.
    pub on_disconnect: Callback<()>,
    /// Turn reliable mode on or off.
    pub on_reliable: Callback<bool>,
    /// Whether the connection is shared across tabs.
    pub share: bool,
    /// Turn sharing across tabs on or off.
    pub on_share: Callback<bool>,
    /// Sharing: this tab's role and the number of tabs, as shown.
    pub tab_role: Option<AttrValue>,
}

/// The connection controls and state.
#[component]
pub fn ConnectionBar(props: &ConnectionBarProps) -> Html {
    let draft = use_state(|| props.url.to_string());
    let token = use_state(String::new);
    let connect = {
        let (draft, token, on_connect) = (draft.clone(), token.clone(), props.on_connect.clone());
        Callback::from(move |()| on_connect.emit(((*draft).clone(), token.trim().to_owned())))
    };
    let oninput = {
        let draft = draft.clone();
        Callback::from(move |e: InputEvent| draft.set(input_value(&e)))
    };
    let on_token = {
        let token = token.clone();
        Callback::from(move |e: InputEvent| token.set(input_value(&e)))
    };
    html! {
        <section class="panel connection">
            { field(&URL, (*draft).clone(), Listen { input: Some(oninput), ..Listen::default() }) }
            { field(&TOKEN, (*token).clone(), Listen { input: Some(on_token), ..Listen::default() }) }
            <div class="buttons">
                { button("connect", "Connect", &connect) }
                { button("disconnect", "Disconnect", &props.on_disconnect) }
            </div>
            { checkbox(&RELIABLE, props.reliable, &props.on_reliable) }
            { checkbox(&SHARE, props.share, &props.on_share) }
            if let Some(role) = &props.tab_role {
                <span data-testid="tab-role" class="tab-role">{ role }</span>
            }
            // The classes as the `className` property: see `state_class`.
            <span data-testid="state" ~className={state_class(&props.state)}>{ &props.status }</span>
        </section>
    }
}
