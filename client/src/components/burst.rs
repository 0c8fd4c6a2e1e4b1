//! Asks the server for a burst and shows its progress and rate.

use yew::prelude::*;

use super::text_field;
use crate::console::{Burst, fixed};

/// What [`burst_panel`] shows and asks.
pub struct BurstPanel<'a> {
    /// The burst size field.
    pub count: &'a UseStateHandle<String>,
    /// The last burst, if any.
    pub burst: Option<&'a Burst>,
    /// The longest main-thread task during it, in ms.
    pub longest_task_ms: Option<f64>,
    /// Ask for a burst of the typed size.
    pub on_burst: &'a Callback<String>,
}

/// The burst controls.
pub fn burst_panel(props: BurstPanel<'_>) -> Html {
    let count = props.count;
    let onclick = {
        let (on_burst, count) = (props.on_burst.clone(), count.clone());
        Callback::from(move |_| on_burst.emit((*count).clone()))
    };
    let (oninput, onchange) = text_field(count);
    let (progress, status) = match props.burst {
        Some(burst) => (burst.progress(), burst.status()),
        None => (0.0, "no burst yet".to_owned()),
    };
    let longest = match props.longest_task_ms {
        Some(ms) => format!("{} ms", fixed(ms, 0)),
        None => "none over 50 ms".to_owned(),
    };
    html! {
        <section class="panel burst">
            <label>{ "Burst" }
                <input data-testid="burst-count" type="number" min="1" value={(**count).clone()} {oninput} {onchange} />
            </label>
            <button data-testid="burst" {onclick}>{ "Request burst" }</button>
            <progress data-testid="burst-progress" max="1" value={fixed(progress, 3)} />
            <span data-testid="burst-status">{ status }</span>
            <span class="muted">{ "longest task: " }<span data-testid="longest-task">{ longest }</span></span>
        </section>
    }
}
