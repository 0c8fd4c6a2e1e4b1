//! Asks the server for a burst and shows its progress and rate.

use yew::prelude::*;

use super::{Field, button, field, text_field};
use crate::console::{Burst, fixed};

/// The burst size field.
const COUNT: Field = Field::number("Burst", "burst-count", "1");

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
        Callback::from(move |()| on_burst.emit((*count).clone()))
    };
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
            { field(&COUNT, (**count).clone(), text_field(count)) }
            { button("burst", "Request burst", &onclick) }
            <progress data-testid="burst-progress" max="1" value={fixed(progress, 3)} />
            <span data-testid="burst-status">{ status }</span>
            <span class="muted">{ "longest task: " }<span data-testid="longest-task">{ longest }</span></span>
        </section>
    }
}
