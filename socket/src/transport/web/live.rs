//! One browser socket (`web_sys::WebSocket`) with its four callbacks, which
//! report to the driver as [`Input`]s tagged with the socket's generation.
//! Owned: dropping it removes the callbacks and closes the socket if it is
//! still connecting or open.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::cause::ErrorCause;
use crate::driver::Input;
use crate::message::Message;

/// The current browser socket and its callbacks.
pub(crate) struct Live {
    ws: WebSocket,
    generation: u64,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl Live {
    /// Creates socket `generation` for `url`; its events go to `report`.
    ///
    /// # Errors
    ///
    /// What the browser said when it refused to create the socket (a
    /// blocked port, say): the exception's message, as text (a `JsValue`
    /// is neither an error type nor `Send`).
    pub(crate) fn connect(
        url: &str,
        generation: u64,
        report: impl Fn(Input) + Clone + 'static,
    ) -> Result<Self, ErrorCause> {
        let ws = WebSocket::new(url).map_err(|err| match err.dyn_ref::<js_sys::Error>() {
            Some(err) => ErrorCause::from(String::from(err.message())),
            None => ErrorCause::from(format!("{err:?}")),
        })?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let on_open = {
            let report = report.clone();
            Closure::<dyn FnMut()>::new(move || report(Input::Opened { generation }))
        };
        let on_message = {
            let report = report.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                if let Some(message) = message_of(event.data()) {
                    report(Input::Message {
                        generation,
                        message,
                    });
                }
            })
        };
        let on_close = {
            let report = report.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
                report(Input::Closed {
                    generation,
                    code: event.code(),
                    reason: event.reason(),
                    was_clean: event.was_clean(),
                });
            })
        };
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            // The browser says no more than this (on purpose: no network details).
            report(Input::Error {
                generation,
                error: "the WebSocket reported an error".into(),
            });
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Self {
            ws,
            generation,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
        })
    }

    /// Which socket this is.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes `message` if the socket is really open; false if it could
    /// not. A closing socket is refused here: the browser would discard the
    /// frame silently.
    pub(crate) fn write(&self, message: &Message) -> bool {
        if self.ws.ready_state() != WebSocket::OPEN {
            return false;
        }
        let sent = match message {
            Message::Text(text) => self.ws.send_with_str(text),
            Message::Binary(data) => self.ws.send_with_u8_array(data),
        };
        sent.is_ok()
    }

    /// Closes with `code` and `reason`; the callbacks go with `self`.
    pub(crate) fn close(self, code: u16, reason: &str) {
        // Throws only for a code or reason the driver never passes (it checks them).
        let _ = self.ws.close_with_code_and_reason(code, reason);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        if self.ws.ready_state() <= WebSocket::OPEN {
            let _ = self.ws.close();
        }
    }
}

/// A frame's payload: text, or binary as an `ArrayBuffer` (the binary type
/// set at creation). Anything else is not a frame.
fn message_of(data: JsValue) -> Option<Message> {
    if let Some(text) = data.as_string() {
        return Some(Message::Text(text));
    }
    let buffer = data.dyn_into::<js_sys::ArrayBuffer>().ok()?;
    Some(Message::Binary(js_sys::Uint8Array::new(&buffer).to_vec()))
}
