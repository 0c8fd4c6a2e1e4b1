//! URL, connect and disconnect, and the connection state.

use buffered_socket::State;
use buffered_socket::yew::use_socket;
use yew::prelude::*;

use super::input_value;

/// Properties of [`ConnectionBar`].
#[derive(Properties, PartialEq)]
pub struct ConnectionBarProps {
    /// The URL the socket uses now.
    pub url: AttrValue,
    /// Connect to a URL (a new one replaces the socket; the same one reconnects).
    pub on_connect: Callback<String>,
    /// When the next attempt is due, while reconnecting.
    pub retry_at_ms: Option<f64>,
    /// Whether reliable mode is on.
    pub reliable: bool,
    /// Turn reliable mode on or off (a new socket).
    pub on_reliable: Callback<bool>,
}

/// The connection controls and state.
#[component]
pub fn ConnectionBar(props: &ConnectionBarProps) -> Html {
    let ctx = use_socket();
    let draft = use_state(|| props.url.to_string());
    let connect = {
        let (draft, url, on_connect, socket) = (
            draft.clone(),
            props.url.clone(),
            props.on_connect.clone(),
            ctx.socket.clone(),
        );
        Callback::from(move |_| {
            if *draft == *url {
                socket.reconnect();
            } else {
                on_connect.emit((*draft).clone());
            }
        })
    };
    let disconnect = {
        let socket = ctx.socket.clone();
        Callback::from(move |_| {
            let _ = socket.close(1000, "closed by the user");
        })
    };
    let toggle_reliable = {
        let (on_reliable, reliable) = (props.on_reliable.clone(), props.reliable);
        Callback::from(move |_| on_reliable.emit(!reliable))
    };
    let oninput = {
        let draft = draft.clone();
        Callback::from(move |e: InputEvent| draft.set(input_value(&e)))
    };
    let state = match ctx.state {
        State::Reconnecting { attempt, .. } => {
            let wait = props
                .retry_at_ms
                .map(|at| ((at - js_sys::Date::now()) / 1000.0).max(0.0));
            match wait {
                Some(s) => format!("reconnecting (attempt {attempt}, next try in {s:.1} s)"),
                None => format!("reconnecting (attempt {attempt}, waiting for the network)"),
            }
        }
        other => other.name().to_owned(),
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
            <span data-testid="state" class={classes!("state", ctx.state.name())}>{ state }</span>
        </section>
    }
}
