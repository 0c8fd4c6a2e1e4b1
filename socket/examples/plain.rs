//! The crate doc's plain wasm example, compiled by clippy for wasm32 so it
//! cannot rot. Build it into a page with `wasm-bindgen` or trunk.

#[cfg(target_arch = "wasm32")]
mod app {
    use std::cell::RefCell;

    use buffered_socket::{Config, Event, SendOutcome, Socket, Subscription};

    /// The socket and its callback live as long as the page (or the app's state).
    type App = (Socket, Subscription);

    thread_local! {
        static APP: RefCell<Option<App>> = const { RefCell::new(None) };
    }

    fn connect() -> Result<App, Box<dyn std::error::Error>> {
        let socket = Socket::new(Config::new("ws://127.0.0.1:8080/ws").with_queue_capacity(500))?;
        let subscription = socket.on_event(|event| {
            if let Event::Message(message) = event {
                web_sys::console::log_1(&format!("{message:?}").into());
            }
        });
        // Not open yet: queued, and sent first thing on open.
        let outcome = socket.send(r#"{"type":"echo","id":1,"body":"hi"}"#)?;
        assert_eq!(outcome, SendOutcome::Queued);
        Ok((socket, subscription))
    }

    pub fn run() {
        match connect() {
            Ok(app) => APP.with(|slot| *slot.borrow_mut() = Some(app)),
            Err(err) => web_sys::console::error_1(&err.to_string().into()),
        }
    }
}

fn main() {
    #[cfg(target_arch = "wasm32")]
    app::run();
}
