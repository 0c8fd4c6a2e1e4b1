//! The Yew app: a live console for the buffered socket.
//!
//! It connects to the `/ws` of the page's own host (so it works behind the
//! server and behind `trunk serve`'s proxy), and shows the connection state,
//! the queue, bursts with their rate, counters, a rate chart and a log; its
//! channel panel subscribes to a channel, publishes to it and shows its
//! members, live, and the publications with their offsets, gaps and resets.
//!
//! # Layout
//!
//! | Path | What |
//! |---|---|
//! | `console/mod.rs` | the app state and its reducer, log lines, burst progress (pure) |
//! | `console/collect.rs` | socket events collected into a batch between flushes (pure) |
//! | `console/countdown.rs` | the state as shown, with the seconds left to the next attempt (pure) |
//! | `console/channel.rs` | the channel panel's feed lines: a subscription's events and a publish's answer, and a member as shown (pure) |
//! | `console/fixed.rs` | decimals for the labels by integer arithmetic, which keeps core's float formatting out of the bundle (pure) |
//! | `hooks/` | `use_console` (events batched into the reducer every 100 ms, with the socket's stats and the clock), `use_commands` (the socket calls behind the components' callbacks), `use_drafts` (the fields of the panels that are view functions), `use_channel` (the channel panel's: one `Channel` held, its presence followed, its events into the reducer, publishes answered with their offsets), `use_interval`, `use_long_tasks` |
//! | `components/` | one file per part of the page: the connection bar, the sender and the log (also the channel panel's feed) are components; the burst panel, channel panel, counters and rate chart are view functions the page calls (a component type costs about 1 KB of wasm; their fields are the page's, `use_drafts`); each takes data and callbacks, never the reducer or the socket |
//! | `app.rs` | the provider (one socket per URL and mode) and the page that wires state and commands to the components |
//!
//! The pure modules build and are tested natively (`cargo test -p client`);
//! the rest is the browser app.
//!
//! The app uses only the public API of `buffered-socket`: one
//! `buffered_socket::yew::SocketProvider` at the top, hooks below it.
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
// The state, the event collection and the countdown are plain Rust: they
// build and are tested natively too.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code, unused_imports))]
mod console;
#[cfg(target_arch = "wasm32")]
mod hooks;

/// talc instead of std's dlmalloc: 2.8 KB less of the console's wasm gzip,
/// by a safe constructor (the wasm is single-threaded).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

#[cfg(target_arch = "wasm32")]
fn main() {
    yew::Renderer::<app::App>::new().render();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the client is a browser app: build it with `trunk build` (or `cargo xtask run`)");
}
