//! Asks the server for a burst and shows its progress and rate.

use buffered_socket::yew::use_socket;
use shared::ClientMessage;
use yew::prelude::*;

use super::input_value;
use crate::console::{Action, Console, Kind, Line};

/// Properties of [`BurstPanel`].
#[derive(Properties, PartialEq)]
pub struct BurstPanelProps {
    /// The reducer.
    pub console: UseReducerHandle<Console>,
}

/// The burst controls.
#[component]
pub fn BurstPanel(props: &BurstPanelProps) -> Html {
    let ctx = use_socket();
    let count = use_state(|| "100000".to_owned());
    let onclick = {
        let (socket, console, count) = (ctx.socket.clone(), props.console.clone(), count.clone());
        Callback::from(move |_| {
            let now_ms = js_sys::Date::now();
            let Ok(n) = count.trim().parse::<u32>() else {
                console.dispatch(Action::Log(Line {
                    at_ms: now_ms,
                    kind: Kind::Error,
                    text: format!("{:?} is not a burst size", *count),
                }));
                return;
            };
            match socket.send(ClientMessage::Burst { count: n }.to_json()) {
                Ok(_) => console.dispatch(Action::BurstRequested { count: n, now_ms }),
                Err(err) => console.dispatch(Action::Log(Line {
                    at_ms: now_ms,
                    kind: Kind::Error,
                    text: format!("burst not sent: {err}"),
                })),
            }
        })
    };
    let oninput = {
        let count = count.clone();
        Callback::from(move |e: InputEvent| count.set(input_value(&e)))
    };
    let console = &props.console;
    let (progress, status) = match console.burst {
        Some(b) => {
            let done = b.received.min(u64::from(b.requested));
            match b.done {
                Some((count, rate)) => (1.0, format!("{count} received, {rate:.0} msg/s")),
                None => (
                    done as f64 / f64::from(b.requested.max(1)),
                    format!("{done} / {}", b.requested),
                ),
            }
        }
        None => (0.0, "no burst yet".to_owned()),
    };
    let longest = match console.longest_task_ms {
        Some(ms) => format!("{ms:.0} ms"),
        None => "none over 50 ms".to_owned(),
    };
    html! {
        <section class="panel burst">
            <label>{ "Burst" }
                <input data-testid="burst-count" type="number" min="1" value={(*count).clone()} {oninput} />
            </label>
            <button data-testid="burst" {onclick}>{ "Request burst" }</button>
            <progress data-testid="burst-progress" max="1" value={progress.to_string()} />
            <span data-testid="burst-status">{ status }</span>
            <span class="muted">{ "longest task: " }<span data-testid="longest-task">{ longest }</span></span>
        </section>
    }
}
