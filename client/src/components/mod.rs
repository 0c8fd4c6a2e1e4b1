//! Components of the page, one per file (the counters and the rate chart
//! are view functions that the page calls: they hold no state).

mod burst;
mod channel;
mod chart;
mod connection;
mod counters;
mod log;
mod sender;

pub use burst::BurstPanel;
pub use channel::ChannelPanel;
pub use chart::rate_chart;
pub use connection::ConnectionBar;
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
