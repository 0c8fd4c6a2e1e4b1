//! The browser side of the burst benchmark: our wasm wrapper
//! (`buffered_socket::Socket`) receives a burst of pushes and times it inside
//! the page, first push to last, with `performance.now()`.
//!
//! Built by `bench run` with `cargo build --release --target
//! wasm32-unknown-unknown -p bench --example browser` and `wasm-bindgen
//! --target web`; `bench-wasm.html` (written by the orchestrator) calls
//! [`burst`]. Its twin `bench-js.html` does the same with the browser's raw
//! `WebSocket` in plain JavaScript: both check every `seq` in order the same
//! cheap way (a substring scan, no JSON parse), so the difference between
//! them is the wrapper.

#[cfg(target_arch = "wasm32")]
mod page {
    use std::cell::RefCell;

    use buffered_socket::{Config, Event, Message, Socket, Subscription};
    use wasm_bindgen::prelude::*;

    /// The socket and its callback live until the burst is over.
    type Run = (Socket, Subscription);

    thread_local! {
        static RUN: RefCell<Option<Run>> = const { RefCell::new(None) };
        /// Looked up once, as the JS page's `performance` is a global:
        /// `window()` and `performance()` are calls into JS (and a type
        /// check) each time.
        static PERFORMANCE: Option<web_sys::Performance> =
            web_sys::window().and_then(|w| w.performance());
    }

    /// The `"seq":N` of a push, read without a full JSON parse (as the JS page does).
    fn seq_of(text: &str) -> Option<u64> {
        let rest = &text[text.find(r#""seq":"#)? + 6..];
        rest[..rest.find(|c: char| !c.is_ascii_digit())?]
            .parse()
            .ok()
    }

    fn now() -> f64 {
        PERFORMANCE.with(|p| p.as_ref().map_or(0.0, web_sys::Performance::now))
    }

    /// What the page reports: JSON given to `done`.
    fn report(done: &js_sys::Function, json: String) {
        let _ = done.call1(&JsValue::NULL, &JsValue::from_str(&json));
    }

    /// Opens our wrapper on `url` (which pushes `count` messages on connect),
    /// checks that pushes 1..=count arrive in order and calls `done` with
    /// `{"ok":true,"count":N,"ms":first-to-last}` or `{"ok":false,"error":...}`.
    #[wasm_bindgen]
    pub fn burst(url: String, count: u32, done: js_sys::Function) {
        let socket = match Socket::new(Config::new(url)) {
            Ok(socket) => socket,
            Err(err) => {
                report(&done, format!(r#"{{"ok":false,"error":"{err}"}}"#));
                return;
            }
        };
        let mut first = None;
        let mut expected: u64 = 1;
        let mut finished = false;
        let subscription = socket.on_event(move |event| {
            if finished {
                return;
            }
            match event {
                Event::Message(Message::Text(text)) => {
                    let Some(seq) = seq_of(text) else { return };
                    let t = now();
                    let t0 = *first.get_or_insert(t);
                    if seq != expected {
                        finished = true;
                        report(
                            &done,
                            format!(
                                r#"{{"ok":false,"error":"push {seq} arrived where {expected} was expected"}}"#
                            ),
                        );
                    } else if seq == u64::from(count) {
                        finished = true;
                        report(
                            &done,
                            format!(r#"{{"ok":true,"count":{count},"ms":{}}}"#, t - t0),
                        );
                    }
                    expected += 1;
                }
                Event::Close(close) => {
                    finished = true;
                    report(
                        &done,
                        format!(
                            r#"{{"ok":false,"error":"closed with {} after {} pushes"}}"#,
                            close.code,
                            expected - 1
                        ),
                    );
                }
                _ => {}
            }
        });
        RUN.with(|run| *run.borrow_mut() = Some((socket, subscription)));
    }

    /// Closes the socket of the last [`burst`] and drops its callback.
    #[wasm_bindgen]
    pub fn finish() {
        if let Some((socket, subscription)) = RUN.with(|run| run.borrow_mut().take()) {
            let _ = socket.close(1000, "done");
            drop(subscription);
        }
    }
}
