//! The page's parts, one per file: the sender and the log are components;
//! the connection bar, the burst panel, the channel panel, the counters
//! and the rate chart are view functions that the page calls, their fields
//! held by the page (`hooks::use_drafts`), since a component type costs
//! about 1 KB of yew's code in the wasm.

mod burst;
mod channel;
mod chart;
mod connection;
mod counters;
mod log;
mod sender;

pub use burst::{BurstPanel, burst_panel};
pub use channel::{ChannelPanel, channel_panel};
pub use chart::rate_chart;
pub use connection::{ConnectionBar, connection_bar};
pub use counters::{Counts, counters};
pub use log::Log;
pub use sender::Sender;

/// The value of an `<input>` from its event.
pub fn input_value(event: &yew::Event) -> String {
    use wasm_bindgen::JsCast;
    event
        .target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        .map(|input| input.value())
        .unwrap_or_default()
}
