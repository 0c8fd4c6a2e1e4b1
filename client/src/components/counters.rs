//! The counters: a view function, not a component. Each component type
//! carries about 1 KB of yew's generic code in the wasm (its create runner,
//! props comparison, mounting); the counters have no state of their own and
//! change at nearly every flush, so the page renders them itself, and yew
//! still writes to the DOM only what changed.

use buffered_socket::Stats;
use yew::prelude::*;

use crate::console::EchoCheck;

/// What [`counters`] shows.
pub struct Counts {
    /// Every message received.
    pub received: u64,
    /// Messages per second over the last full second.
    pub rate: u64,
    /// The socket's counters.
    pub stats: Stats,
    /// Whether the socket is in reliable mode (its counters are shown).
    pub reliable: bool,
    /// Pushes received.
    pub pushes: u64,
    /// This tab's echo replies, checked against the order they were sent in.
    pub echoes: EchoCheck,
    /// The pushes' seqs, checked against their order.
    pub push_order: EchoCheck,
}

/// Received, rate, dropped, reconnects; in reliable mode also delivered,
/// acknowledged (and still unacknowledged) and gaps.
pub fn counters(props: &Counts) -> Html {
    let stats = &props.stats;
    let tile = |id: &'static str, label: &'static str, value: String| {
        html! {
            <div class="tile"><span class="label">{ label }</span><b data-testid={id}>{ value }</b></div>
        }
    };
    html! {
        <section class="counters">
            { tile("received", "received", props.received.to_string()) }
            { tile("rate", "msg/s", props.rate.to_string()) }
            { tile("dropped", "dropped", stats.dropped.to_string()) }
            { tile("reconnects", "reconnects", stats.reconnects.to_string()) }
            { tile("pushes", "pushes", props.pushes.to_string()) }
            { tile("echoes", "own echoes", props.echoes.to_string()) }
            if props.reliable {
                { tile("delivered", "delivered", stats.delivered.to_string()) }
                { tile("acked", "acked", format!("{} (+{})", stats.acked, stats.unacked)) }
                { tile("gaps", "gaps", stats.gaps.to_string()) }
                { tile("push-order", "push seqs", props.push_order.to_string()) }
            }
        </section>
    }
}
