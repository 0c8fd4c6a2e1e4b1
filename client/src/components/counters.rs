//! The counters.

use yew::prelude::*;

use crate::console::Console;

/// Properties of [`Counters`].
#[derive(Properties, PartialEq)]
pub struct CountersProps {
    /// The state to show.
    pub console: UseReducerHandle<Console>,
}

/// Received, rate, dropped, reconnects.
#[component]
pub fn Counters(props: &CountersProps) -> Html {
    let c = &props.console;
    let tile = |id: &'static str, label: &'static str, value: String| {
        html! {
            <div class="tile"><span class="label">{ label }</span><b data-testid={id}>{ value }</b></div>
        }
    };
    html! {
        <section class="counters">
            { tile("received", "received", c.received.to_string()) }
            { tile("rate", "msg/s", c.rate.to_string()) }
            { tile("dropped", "dropped", c.figures.dropped.to_string()) }
            { tile("reconnects", "reconnects", c.figures.reconnects.to_string()) }
        </section>
    }
}
