//! The page's parts, one per file: the connection bar, the sender and the
//! log are components; the burst panel, the channel panel, the counters
//! and the rate chart are view functions that the page calls, their fields
//! held by the page (`hooks::use_drafts`), since a component type costs
//! about 1 KB of yew's code in the wasm.

mod burst;
mod channel;
mod chart;
mod connection;
mod controls;
mod counters;
mod log;
mod sender;

pub use burst::{BurstPanel, burst_panel};
pub use channel::{ChannelPanel, channel_panel};
pub use chart::rate_chart;
pub use connection::ConnectionBar;
pub use controls::{Check, Field, Listen, button, checkbox, field};
pub use counters::{Counts, counters};
pub use log::Log;
pub use sender::Sender;
use yew::{Callback, Event, InputEvent, UseStateHandle};

/// The listeners that keep `state` equal to a text field's value, for the
/// fields the page holds (`hooks::use_drafts`): on each input, and on a
/// change that came with no input event (a WebDriver clear, say), since
/// the page renders the field again at every flush and would otherwise put
/// the state's older value back.
pub fn text_field(state: &UseStateHandle<String>) -> Listen {
    let input = {
        let state = state.clone();
        Callback::from(move |e: InputEvent| state.set(input_value(&e)))
    };
    let change = {
        let state = state.clone();
        Callback::from(move |e: Event| state.set(input_value(&e)))
    };
    Listen {
        input: Some(input),
        change: Some(change),
        keydown: None,
    }
}

/// The value of an `<input>` from its event.
pub fn input_value(event: &Event) -> String {
    use wasm_bindgen::JsCast;
    event
        .target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        .map(|input| input.value())
        .unwrap_or_default()
}
