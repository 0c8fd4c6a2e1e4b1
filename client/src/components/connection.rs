//! URL, connect and disconnect, and the connection state.

use buffered_socket::State;
use yew::prelude::*;

use super::input_value;

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
    /// Connect to the URL in the field.
    pub on_connect: Callback<String>,
    /// Close for good.
    pub on_disconnect: Callback<()>,
    /// Turn reliable mode on or off.
    pub on_reliable: Callback<bool>,
}

/// The connection controls and state.
#[component]
pub fn ConnectionBar(props: &ConnectionBarProps) -> Html {
    let draft = use_state(|| props.url.to_string());
    let connect = {
        let (draft, on_connect) = (draft.clone(), props.on_connect.clone());
        Callback::from(move |_| on_connect.emit((*draft).clone()))
    };
    let disconnect = props.on_disconnect.reform(|_: MouseEvent| ());
    let toggle_reliable = {
        let reliable = props.reliable;
        props.on_reliable.reform(move |_: Event| !reliable)
    };
    let oninput = {
        let draft = draft.clone();
        Callback::from(move |e: InputEvent| draft.set(input_value(&e)))
    };
    html! {
        <section class="panel connection">
            <label class="grow">{ "URL" }
                <input data-testid="url" type="text" value={(*draft).clone()} {oninput} />
            </label>
            <div class="buttons">
                <button data-testid="connect" onclick={connect}>{ "Connect" }</button>
                <button data-testid="disconnect" onclick={disconnect}>{ "Disconnect" }</button>
            </div>
            <label class="check" title="acknowledged, resumable delivery: nothing lost across reconnects">
                <input data-testid="reliable" type="checkbox" checked={props.reliable}
                    onchange={toggle_reliable} />
                { "reliable" }
            </label>
            <span data-testid="state" class={classes!("state", props.state.name())}>{ &props.status }</span>
        </section>
    }
}
