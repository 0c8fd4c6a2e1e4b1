//! Components of the page, one per file.

mod burst;
mod channel;
mod chart;
mod connection;
mod counters;
mod log;
mod sender;

pub use burst::BurstPanel;
pub use channel::ChannelPanel;
pub use chart::RateChart;
pub use connection::ConnectionBar;
pub use counters::Counters;
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
