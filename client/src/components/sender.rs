//! The message box, the queue figure and capacity, and the auto-sender.

use std::cell::Cell;
use std::rc::Rc;

use buffered_socket::yew::use_socket;
use buffered_socket::{SendOutcome, Socket};
use shared::ClientMessage;
use yew::prelude::*;

use super::input_value;
use crate::console::{Action, Console, Kind, Line, SocketFigures};
use crate::hooks::use_interval;

/// What the original page sent every 3 s.
const AUTO_TEXT: &str = "web browser setInterval";

/// Properties of [`Sender`].
#[derive(Properties, PartialEq)]
pub struct SenderProps {
    /// The reducer, to log what was sent.
    pub console: UseReducerHandle<Console>,
    /// The queue figures.
    pub figures: SocketFigures,
}

/// Sends `body` as an echo and logs the outcome.
fn send_echo(socket: &Socket, ids: &Cell<u64>, console: &UseReducerHandle<Console>, body: &str) {
    let id = ids.get() + 1;
    ids.set(id);
    let json = ClientMessage::Echo {
        id,
        body: body.to_owned(),
    }
    .to_json();
    let (kind, text) = match socket.send(json) {
        Ok(SendOutcome::Sent) => (Kind::Send, format!("#{id} {body}")),
        Ok(SendOutcome::Queued) => (Kind::Send, format!("#{id} {body} (queued)")),
        Err(err) => (Kind::Error, format!("#{id} not sent: {err}")),
    };
    console.dispatch(Action::Log(Line {
        at_ms: js_sys::Date::now(),
        kind,
        text,
    }));
}

/// The sending controls.
#[component]
pub fn Sender(props: &SenderProps) -> Html {
    let ctx = use_socket();
    let draft = use_state(String::new);
    let ids = use_memo((), |()| Rc::new(Cell::new(0u64)));
    let auto = use_state(|| false);

    let send = {
        let (socket, ids, console, draft) = (
            ctx.socket.clone(),
            ids.clone(),
            props.console.clone(),
            draft.clone(),
        );
        Callback::from(move |()| {
            if !draft.is_empty() {
                send_echo(&socket, &ids, &console, &draft);
            }
        })
    };
    {
        let (socket, ids, console) = (ctx.socket.clone(), ids.clone(), props.console.clone());
        use_interval(
            move || send_echo(&socket, &ids, &console, AUTO_TEXT),
            if *auto { 3000 } else { 0 },
        );
    }
    let onclick = send.reform(|_: MouseEvent| ());
    let onkeydown = {
        let send = send.clone();
        Callback::from(move |e: KeyboardEvent| {
            if e.key() == "Enter" {
                send.emit(());
            }
        })
    };
    let oninput = {
        let draft = draft.clone();
        Callback::from(move |e: InputEvent| draft.set(input_value(&e)))
    };
    let on_capacity = {
        let socket = ctx.socket.clone();
        Callback::from(move |e: Event| {
            if let Ok(capacity) = input_value(&e).trim().parse::<usize>() {
                socket.set_queue_capacity(capacity);
            }
        })
    };
    let toggle = {
        let auto = auto.clone();
        Callback::from(move |_| auto.set(!*auto))
    };
    let SocketFigures {
        queue_len,
        queue_capacity,
        ..
    } = props.figures;
    html! {
        <section class="panel sender">
            <label class="grow">{ "Message" }
                <input data-testid="message" type="text" placeholder="type and press Enter"
                    value={(*draft).clone()} {oninput} {onkeydown} />
            </label>
            <button data-testid="send" {onclick}>{ "Send" }</button>
            <div class="queue">
                <span>{ "queue " }<b data-testid="queue">{ format!("{queue_len}/{queue_capacity}") }</b></span>
                <label>{ "capacity" }
                    <input data-testid="capacity" type="number" min="0" value={queue_capacity.to_string()}
                        onchange={on_capacity} />
                </label>
                <label class="toggle">
                    <input data-testid="auto-send" type="checkbox" checked={*auto} onclick={toggle} />
                    { format!("send \"{AUTO_TEXT}\" every 3 s") }
                </label>
            </div>
        </section>
    }
}
