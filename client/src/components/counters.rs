//! The counters.

use yew::prelude::*;

use crate::console::Console;

/// Properties of [`Counters`].
#[derive(Properties, PartialEq)]
pub struct CountersProps {
    /// The state to show.
    pub console: UseReducerHandle<Console>,
    /// Whether the socket is in reliable mode (its counters are shown).
    pub reliable: bool,
}

/// Received, rate, dropped, reconnects; in reliable mode also delivered,
/// acknowledged (and still unacknowledged) and gaps.
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
            if props.reliable {
                { tile("delivered", "delivered", c.figures.delivered.to_string()) }
                { tile("acked", "acked", format!("{} (+{})", c.figures.acked, c.figures.unacked)) }
                { tile("gaps", "gaps", c.figures.gaps.to_string()) }
            }
        </section>
    }
}
