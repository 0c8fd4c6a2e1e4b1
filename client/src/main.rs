//! The Yew app: a live console for the buffered socket.
//!
//! It connects to the `/ws` of the page's own host (so it works behind the
//! server and behind `trunk serve`'s proxy), and shows the connection state,
//! the queue, bursts with their rate, counters, a rate chart and a log.
//!
//! # Layout
//!
//! * `console.rs`: the app state and its reducer (pure, tested natively);
//! * `hooks/`: `use_console` (socket events batched into the reducer every
//!   100 ms), `use_interval`, `use_long_tasks`;
//! * `components/`: one file per component: connection bar, sender, burst
//!   panel, counters, log, rate chart.
//!
//! The app uses only the public API of `buffered-socket`: one
//! [`SocketProvider`] at the top, hooks below it.
//!
//! # Example
//!
//! ```sh
//! trunk serve          # http://127.0.0.1:8081, with the server on 8080
//! ```

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod components;
// The reducer is plain Rust: it builds and is tested natively too.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod console;
#[cfg(target_arch = "wasm32")]
mod hooks;

#[cfg(target_arch = "wasm32")]
fn main() {
    yew::Renderer::<app::App>::new().render();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the client is a browser app: build it with `trunk build` (or `cargo xtask run`)");
}
